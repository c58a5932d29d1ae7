// Package outbox is the broker-neutral half of the transactional outbox:
// the [Relay] that publishes stored messages through ordinary
// [publisher.Publisher]s, and the interfaces it works on ([Store],
// [Batch]). The storage half — the table, enqueueing inside the caller's
// transaction, the store the relay uses — is package
// [github.com/uuidforge/uuidforge/outbox/pgoutbox] (PostgreSQL), as
// dedupe/pgstore is to dedupe.
//
// # Why
//
// A service that commits an order and then publishes order.placed loses
// the event if it dies between the two; a handler that publishes inside
// its inbox transaction sends the message even if the transaction then
// rolls back. With the outbox the message is written in the same
// transaction as the business data — it exists if and only if that
// transaction commits — and a relay publishes it afterwards, from any
// process, with exactly the IDs it was stamped with at enqueue time, until
// the broker confirms it.
//
// # The relay
//
//	store, err := pgoutbox.New(pool)
//	orders, err := rabbitpub.New(amqpURL, gen, rabbitpub.WithExchange("orders"))
//	audit, err := kafkapub.New(brokers, "audit", gen)
//	relay, err := outbox.NewRelay(store, map[string]publisher.Publisher{
//		"orders": orders, // destination name → the publisher of one exchange or topic
//		"audit":  audit,
//	})
//	err = relay.Run(ctx) // until ctx ends
//
// Run as many relays as you like, in as many processes: they share the
// work through the store's locks. Each worker claims a batch of due records
// ([Store.Claim]), publishes them with PublishBatch (RabbitMQ confirms,
// Kafka acks=all, as the publishers do), and marks the confirmed ones
// dispatched and the failed ones for a later attempt ([Batch.Finish]).
// New records wake the workers through the store's notifications
// ([Store.Listen]; PostgreSQL's LISTEN/NOTIFY), so an idle relay publishes
// a new record within milliseconds; polling ([WithPollInterval]) is the
// fallback and finds records whose back-off ended.
//
// Each message is published at least once: a relay that dies, or loses
// its database connection, before marking a batch leaves the batch to be
// published again, with the same IDs, so consumers that deduplicate (see
// package consumer) see each effect once. Nothing is marked dispatched that
// the broker did not confirm.
//
// # Order
//
// For one destination and one key (the business key's wire form), a
// record is handed to the publisher only after every earlier record of
// that key (smaller Seq) was confirmed or died, across any number of
// relays; the first copy of each message therefore reaches the broker in
// enqueue order. A failing record holds up the later records of its key
// (only those) until it succeeds or dies; records without a key are not
// ordered. [Relay] states the details, and package pgoutbox what "enqueue
// order" means for concurrent transactions.
//
// # Failures and dead records
//
// A failed attempt is tried again after an exponential back-off
// ([WithBackoff]) without blocking other keys. A record rejected as
// invalid ([publisher.ErrInvalid]) or unroutable ([publisher.ErrUnroutable]),
// or out of attempts ([WithMaxAttempts]), moves to the [Dead] state with
// its reason; the store lists and redrives dead records
// (pgoutbox.Store.Dead, Redrive, RedriveAll).
//
// # Observing
//
// [WithObserver] receives each record dispatched (with its enqueue time,
// for latency) and each failure; [WithLogger] logs failures. The backlog —
// pending records and the age of the oldest, per destination — comes from
// the store (pgoutbox.Store.Backlog).
package outbox
