// Package rabbitsub runs a [consumer.Handler] for every message of a RabbitMQ
// queue, with manual acks, a prefetch window and N workers.
//
// A delivery is acked only after the handler chain returned nil (so, with
// [consumer.Dedupe], after the completion is stored). A failure is retried in
// place with backoff, holding the delivery; after the configured attempts,
// or at once for a [consumer.Permanent] error or a malformed ID, the message
// is dead-lettered: published with the reason in [consumer.HeaderDeadLetterReason] to
// a dead-letter queue (by default "<queue>.dead-letter", declared durable)
// or exchange in confirm mode, and acked only after the broker confirmed it —
// or, with [WithQueueDeadLetterExchange], rejected without requeue to the
// queue's own dead-letter exchange. A message whose claim is
// held elsewhere, or whose store is down, waits (it is never acked or
// dead-lettered for that). Lost connections and channels are re-established
// with backoff; the broker redelivers unacked messages and dedupe
// recognises those already done.
//
//	c, err := rabbitsub.New("amqp://guest:guest@localhost:5672/", "orders", handle,
//		consumer.WithDedupe(store, "orders-service"),
//		rabbitsub.WithPrefetch(32), rabbitsub.WithWorkers(8)) // dead letters: "orders.dead-letter"
//	if err != nil { ... }
//	err = c.Run(ctx) // graceful shutdown when ctx is done
//
// IDs: the message ID is the MessageId property, the correlation ID the
// CorrelationId property, the causation ID the "causation-id" header, the
// type the Type property and the business key ([consumer.Message.Key]) the
// "message-key" header; see [consumer.Identify] for missing and malformed
// IDs.
package rabbitsub
