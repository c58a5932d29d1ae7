// Package dedupe turns at-least-once delivery into processing once: before a
// consumer handles a message it claims the message's key (scope, message ID)
// in a shared [Store], and only the claimer that acquired the lease processes
// it.
//
// # The protocol
//
// [Store.Claim] answers one of three things:
//   - [Acquired], with a fencing token: process the message, then call
//     [Store.Complete] on success or [Store.Release] on failure;
//   - [Duplicate]: the message was completed earlier and is within
//     retention: ack it without processing;
//   - [InFlight]: another consumer holds an unexpired lease (until
//     [Claim.Until]): neither ack nor drop the message; try again later.
//
// Nothing is recorded as done before the handler succeeds, so a failing
// handler never turns its redelivery into a "duplicate". A lease that expires
// (a crashed consumer) can be claimed by anyone; the old holder's Complete or
// Release then fails with [ErrLeaseLost] rather than succeeding silently. A
// store error is an error, never a duplicate: the caller does not ack and the
// broker redelivers.
//
// Retention is how long Duplicate answers last: 0 means the store's default
// ([DefaultRetention] unless the store's options say otherwise), [Forever]
// keeps the key where the store supports it.
//
// # Stores
//
//   - [Memory] (this package, [NewMemory]): one process, bounded
//     ([DefaultMaxEntries] keys), retention [DefaultRetention] by default; the
//     default store;
//   - dedupe/redisstore: many processes, one Redis (or Cluster) round trip per call;
//   - dedupe/pgstore: PostgreSQL, with the transactional [Inbox];
//   - dedupe/boltstore: an embedded file for one machine that must remember
//     across restarts.
//
// Every store here is also a [BatchStore] (many keys per round trip: a
// pipeline on Redis, one statement on PostgreSQL, one transaction on bbolt)
// and pgstore a [BatchInbox] (a group of messages in one transaction, a
// savepoint each). The batch methods answer key by key what the single-key
// methods would.
//
// Every store here is also an [Admin]: [Admin.Inspect] shows a key's record
// ([Record]: absent, leased until when and by which token, done until when
// or forever, released) and [Admin.Forget] deletes it so that the next
// delivery of the message is processed again — what the command
// forge dedupe does. Forget refuses a lease that has not ended unless
// forced ([ErrLeaseHeld]), and fencing survives it: the next acquisition
// gets a larger token than any before, so the holder of a forgotten lease
// fails with [ErrLeaseLost] instead of completing over its successor.
//
// dedupe/dedupetest is the conformance suite every store passes, batch and
// admin methods included; run it on your own store too.
//
// # Usage
//
//	store, err := dedupe.NewMemory()
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//	key := dedupe.Key{Scope: "billing", ID: msg.ID}
//	c, err := store.Claim(ctx, key, 30*time.Second)
//	switch {
//	case err != nil:
//		return err // do not ack: the broker redelivers
//	case c.Status == dedupe.Duplicate:
//		return ack()
//	case c.Status == dedupe.InFlight:
//		return retryLater(c.Until)
//	}
//	if err := handle(ctx, msg); err != nil {
//		_ = store.Release(ctx, c)
//		return err
//	}
//	if err := store.Complete(ctx, c, 0); err != nil {
//		return err // ErrLeaseLost: someone else took over; do not ack
//	}
//	return ack()
package dedupe
