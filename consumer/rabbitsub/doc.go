// Package rabbitsub runs a [consumer.Handler] for every message of a RabbitMQ
// queue, with manual acks, a prefetch window, N workers and batches.
//
// A delivery is acked only after the handler chain returned nil (so, with
// [consumer.Dedupe], after the completion is stored). A failure is retried
// with backoff, holding the delivery; after the configured attempts,
// or at once for a [consumer.Permanent] error or a malformed ID, the message
// is dead-lettered: published with the reason in [consumer.HeaderDeadLetterReason] to
// a dead-letter queue (by default "<queue>.dead-letter", declared durable)
// or exchange in confirm mode, and acked only after the broker confirmed it —
// or, with [WithQueueDeadLetterExchange], rejected without requeue to the
// queue's own dead-letter exchange. A dead letter the broker refuses or
// returns is retried in place with backoff (the delivery is held, the
// connection kept); the original is never acked before its dead letter is
// stored. A message whose claim is held elsewhere, or whose store is down,
// waits (it is never acked or dead-lettered for that). Lost connections are
// re-established with backoff, which starts again from the minimum only
// after a delivery was acked or dead-lettered; the broker redelivers unacked
// messages and dedupe recognises those already done. Refused credentials or
// virtual hosts end [Consumer.Run] with an error wrapping
// [rabbitmq.ErrRefused]; [Consumer.Ping] checks them, and the queues, at
// once.
//
//	c, err := rabbitsub.New("amqp://guest:guest@localhost:5672/", "orders", handle,
//		consumer.WithDedupe(store, "orders-service"),
//		rabbitsub.WithFailoverURLs("amqp://guest:guest@node2:5672/"),
//		rabbitsub.WithPrefetch(32), rabbitsub.WithWorkers(8)) // dead letters: "orders.dead-letter"
//	if err != nil { ... }
//	if err := c.Ping(ctx); err != nil { ... } // optional: fail fast
//	err = c.Run(ctx) // graceful shutdown when ctx is done
//
// # Batches
//
// A worker takes a delivery and, with it, every delivery already waiting in
// the prefetch window, up to [WithBatchSize] ([DefaultBatchSize]); it never
// waits for more, so a lone delivery is processed at once. The batch goes
// once through [consumer.Processor.TryBatch]: with a dedupe.BatchStore
// (memory, Redis, bbolt) its claims take one round trip to the store and
// its completions another; with a dedupe.BatchInbox (the PostgreSQL store)
// it is one transaction with a savepoint per message. The handlers of a
// batch run one after the other, on the worker that took it. RabbitMQ keeps
// no per-key order across a queue's consumers, nor across the workers of
// one, so a batch keeps none either: which deliveries share a batch is only
// a question of what arrived together.
//
// Nothing of a batch is acked before its completions are stored (or its
// transaction committed). The acks of a batch then go out as one basic.ack
// with multiple=true when every earlier delivery on the channel is settled
// (so that the ack covers exactly the batch's own), and one by one when
// another worker still holds an earlier one: a delivery is never acked by
// another's ack.
//
// A failure affects only its own message. Every member of a batch is tried
// once, whatever happens to the others. A member that fails (or finds its
// claim held elsewhere, or meets a store error) is not settled with the
// batch: once the others are acked or dead-lettered, the worker retries it
// alone, after a backoff wait, as [consumer.Processor.Process] retries (a
// failed run in the batch counts as an attempt), and such members one
// after another before it takes its next batch. A member that fails
// permanently, or on its last allowed attempt, is dead-lettered alone, as
// is a delivery with a malformed ID or headers the client cannot read,
// which never reaches the handler. With deduplication, a message ID that
// occurs twice in a batch is processed once: the second delivery finds the
// first one's claim held, is retried after the batch, and then finds the
// first one's completion and is acked as a duplicate.
//
// On shutdown, the handler in progress finishes (for at most the shutdown
// timeout, which then cancels it) and the members of its batch that have
// not started are handed back, their claims released, as is every member
// not completed; the deliveries not taken into a batch go back to the
// queue untouched, as do failed members waiting for their retry. A batch's
// acks wait for its last member: with slow handlers, a smaller batch size
// acks sooner; [WithBatchSize](1) processes each delivery on its own.
//
// The defaults (a prefetch window of [DefaultPrefetch], [DefaultWorkers]
// workers, batches of up to [DefaultBatchSize]) were chosen with the
// benchmarks of this package (BenchmarkBatchSize: rate against the time a
// delivery takes from the start of its processing to its ack, for Redis and
// the PostgreSQL inbox; make bench prints the comparison with the raw
// client). Larger batches amortise more round trips but hold each
// delivery's ack until the whole batch is done: with the PostgreSQL inbox,
// WithPrefetch(512) and WithBatchSize(64) process more messages per second
// than the defaults, at about twice the time to ack.
//
// IDs: the message ID is the MessageId property, the correlation ID the
// CorrelationId property, the causation ID the "causation-id" header, the
// type the Type property, the business key ([consumer.Message.Key]) the
// "message-key" header, and [consumer.Message.Exchange] and RoutingKey the
// delivery's exchange and routing key; the IDs are read before
// [consumer.Processor.Begin], so an observer knows them when the delivery
// starts; see [consumer.Identify] for missing and malformed
// IDs. [consumer.Message.Body] is the delivery's body, not a copy.
//
// # Messages the AMQP client cannot read
//
// RabbitMQ accepts messages that amqp091-go refuses to read: a header table
// with more than 8192 entries, tables or arrays nested deeper than 32
// levels, a field type the client does not know, or a content header
// within 8 bytes of the negotiated frame_max. The client would close its
// connection on every delivery of such a message, which would go back to
// the head of its queue, forever. The consumer reads the broker's frames
// before the client does: such a message reaches it without its headers,
// and it dead-letters it with the reason "headers unreadable by the AMQP
// client: …" in an envelope that holds the headers exactly as received.
// The handler never sees it, and the connection and the other deliveries
// are not disturbed. This holds for classic and quorum queues alike. Tools
// that read a queue holding such messages (a dead-letter queue) dial with a
// [Guard] for the same protection; [CheckHeaders] says whether a header
// table can be published again without poisoning its queue.
//
// Should a connection still be closed by a frame the client cannot read,
// the consumer logs it at ERROR, backs off (up to the maximum backoff while
// no delivery succeeds) and takes the next deliveries one at a time, as
// many as its prefetch window: the message that killed the connection is
// among them. On a quorum queue declared with a delivery limit
// ([WithTopology], [rabbitmq.Queue].DeliveryLimit) the broker then
// dead-letters that message after that many deliveries (RabbitMQ counts a
// delivery whose connection the client closed as failed — and so every
// other delivery in flight on that connection, which is why the consumer
// takes them one at a time). A classic queue has no delivery limit: the
// message stays at its head, and the consumer waits, until an operator
// removes it.
//
// # Dead letters
//
// A dead letter is a copy of the original: its body, properties (except
// Expiration: a dead letter must not expire; DeliveryMode is persistent)
// and headers, plus [consumer.HeaderDeadLetterReason],
// [consumer.HeaderOriginalQueue], [consumer.HeaderAttempts] (a decimal
// string) and [consumer.HeaderDeadLetterID]. The reason is at most
// [consumer.MaxReasonBytes] bytes ([consumer.Reason]).
//
// When such a copy cannot be stored faithfully — its headers would not fit
// in the connection's frame_max, the client could not read the original's
// headers, or the original carries a user-id property (RabbitMQ accepts a
// publish only with the publishing connection's own user) — the dead letter
// is an envelope instead: its content type is [EnvelopeContentType], its
// headers are the four above (the reason header shortened further if it
// still would not fit, with a marker), its MessageId, CorrelationId, Type,
// Timestamp, AppId and Priority are the original's, and its body is a JSON
// object:
//
//	{
//	  "version": 1,                   // EnvelopeVersion
//	  "queue": "orders",              // the queue the original was consumed from
//	  "reason": "…",                  // the whole reason (at most consumer.MaxReasonBytes bytes)
//	  "attempts": 3,                  // handler runs; 0 when the handler never ran
//	  "exchange": "shop",             // the original's exchange; absent for the default exchange
//	  "routing_key": "order.created", // the original's routing key; absent when empty
//	  "properties": {                 // the original's properties; each absent when not set
//	    "content_type": "…", "content_encoding": "…", "delivery_mode": 2, "priority": 1,
//	    "correlation_id": "…", "reply_to": "…", "expiration": "…", "message_id": "…",
//	    "timestamp": 1700000000,      // seconds since the Unix epoch
//	    "type": "…", "user_id": "…", "app_id": "…"
//	  },
//	  "base64_strings": {"message_id": "…"}, // string fields above (by name) that are not valid
//	                                         // UTF-8, base64-encoded; then absent above
//	  "headers": "…",                 // the original header table, base64: the AMQP 0-9-1 field table
//	                                  // encoding with its 4-byte length first; absent without headers
//	  "body": "…"                     // the original body, base64 (standard alphabet, padded)
//	}
//
// Nothing of the original is dropped. [ParseDeadLetter] reads both forms
// (and messages the broker dead-lettered, with their x-death header) back
// into the original message, the reason, the attempts and the queue, for
// tools that list, show and redrive dead letters. The envelope's body is
// about 4/3 of the original's: a broker whose max_message_size the envelope
// exceeds refuses it; like any refused dead letter, it is retried with
// backoff (logged) while the original is held, and the original goes back
// to its queue when the consumer stops.
package rabbitsub
