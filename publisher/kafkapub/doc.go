// Package kafka publishes [publisher.Message] values to a Kafka topic with
// deterministic IDs, using github.com/segmentio/kafka-go.
//
// Every record carries the headers message-id, correlation-id,
// message-type and, on a message caused by another, causation-id ([HeaderMessageID]
// etc.). The record key is the business key ([KeyBytes]), and records are
// partitioned by key hash (kafka-go's Writer defaults to round-robin, which
// would break per-key order), so one entity's messages keep their order.
// Writes wait for all in-sync replicas by default.
//
//	gen := forge.MustNew("orders.example.com")
//	p, err := kafka.New([]string{"localhost:9092"}, "orders", gen)
//	if err != nil { ... }
//	defer p.Close()
//	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: body})
//
// [Publisher.Publish] writes at once rather than waiting for kafka-go's batch
// timeout; [Publisher.PublishBatch] batches per partition for throughput.
// Failed writes are retried with back-off until the context ends.
//
// kafka-go has no idempotent producer, so a retried write whose first attempt
// did reach the broker lands twice. That is safe: both copies have the same
// message ID, and consumers deduplicate by it.
package kafkapub
