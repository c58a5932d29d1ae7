// Package kafkapub publishes [publisher.Message] values to a Kafka topic with
// deterministic IDs, using github.com/segmentio/kafka-go's protocol client.
//
// Every record carries the headers message-id, correlation-id,
// message-type and, on a message caused by another, causation-id (see
// package lineage). The record key is the business key
// ([publisher.KeyBytes]), and records are partitioned by key hash
// ([WithPartitioner]), so one entity's messages keep their order. Writes
// wait for all in-sync replicas by default ([WithAcks]).
//
//	gen := forge.MustNew("orders.example.com")
//	p, err := kafkapub.New([]string{"localhost:9092"}, "orders", gen,
//		kafkapub.WithTLS(tlsConfig), kafkapub.WithSASL(plain.Mechanism{...}))
//	if err != nil { ... }
//	defer p.Close()
//	if err := p.Ping(ctx); err != nil { ... } // fail fast: cluster unreachable, topic missing
//	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: body})
//
// # Batching
//
// Each partition has one produce request in flight at a time. The records
// that arrive while it is in flight — from concurrent Publish calls of any
// number of goroutines, and from PublishBatch — go together in the next
// request of their partition (group commit, up to [WithBatchSize] records
// and about 1 MB), so many goroutines that each publish one message and
// wait for its acknowledgement get the throughput of batching without a
// linger delay: a lone Publish is sent at once. Each call still returns
// only once the broker acknowledged its own records, and fails on its own:
// a request that fails is retried by each of its callers under its own
// back-off and context.
//
// Failed writes are retried with back-off until the context ends, except
// those that trying again cannot cure (refused authentication, a record
// over the broker's size limit), which fail at once. kafka-go
// has no idempotent producer, so a retried write whose first attempt did
// reach the broker lands twice. That is safe: both copies have the same
// message ID, and consumers deduplicate by it.
//
// # Observer
//
// With publisher.WithObserver, each message of a Publish or PublishBatch
// call gets, once the call is accepted (valid input, publisher open):
// PublishStart after it is stamped, with System "kafka", Destination the
// topic, Key the record key, its Lineage, BodySize, Batch (the call's
// message count) and Start (when the call began) — headers it sets with
// Publication.SetHeader are sent as record headers (replacing one of the
// same name; the lineage headers cannot be changed); PublishRetry before
// each new attempt, with the failed attempt's error and Attempts so far;
// and PublishDone once, with nil when the broker acknowledged the record or
// the [*publisher.PublishError] the call reports for it. Records that share
// a produce request are still reported one by one. Without an observer the
// publisher does no observer work and allocates nothing for it.
//
// # Options
//
// Connection settings are this package's own options: [WithTLS],
// [WithSASL] (a kafka-go sasl.Mechanism, from its sasl/plain or
// sasl/scram packages), [WithClientID]; [WithTransportConfig] is the
// validated escape hatch to the kafka-go Transport for anything else.
package kafkapub
