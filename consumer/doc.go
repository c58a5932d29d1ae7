// Package consumer runs a handler once per message ID, however often a broker
// or a producer delivers the message, without losing a message to a failure,
// a crash or a restart.
//
// A [Handler] processes one transport-neutral [Message]. The transport loops
// (packages rabbitsub and kafkasub) wrap it in the standard chain —
// [Lineage], [Dedupe], [Timeout], [Recover], in the order that keeps every
// guarantee — retry a failing message in place ([Processor]), dead-letter it
// after N attempts, and acknowledge or commit only after the handler
// succeeded and the dedupe completion is stored. One [Option] list
// configures all of it; transport options are of the same type:
//
//	store, err := dedupe.NewMemory() // or redisstore, pgstore (the transactional inbox), boltstore
//	if err != nil { ... }
//	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
//		return charge(ctx, m.ID, m.Key, m.Body) // publishing from here derives IDs from m
//	})
//	c, err := rabbitsub.New(url, "billing", handle,
//		consumer.WithDedupe(store, "billing"),   // scope: this consumer's name or group
//		consumer.WithTimeout(10*time.Second),    // below the lease
//		consumer.WithMaxAttempts(5),
//		rabbitsub.WithPrefetch(32))
//	if err != nil { ... }
//	err = c.Run(ctx) // until ctx is done
//
// [NewHandler] builds the same chain for running it another way; [Chain]
// composes middlewares by hand and [Check] rejects orders that break a
// guarantee. Every outcome — processed, duplicate, waiting for another
// consumer's lease, retry, dead-lettered, abandoned — reaches the logger
// ([WithLogger], [LogObserver]) and any [Observer] ([WithObserver]).
//
// Guarantees: a message is acknowledged only after its handler returned nil
// and the store recorded it done (or it was a duplicate, or it was stored in
// the dead letter). A handler runs at most once per ID and scope at a time
// (the claim's lease), and — with a store whose retention covers every
// redelivery — once in total after success; with a [dedupe.Inbox] store its
// writes and the completion commit together, so effects happen exactly
// once. A store outage stops acknowledgements; messages wait and are
// processed when it answers again.
//
// Messages without an ID get a content ID ([ContentID], see forge/SPEC.md,
// section "Content IDs") unless [MissingIDDeadLetter] is chosen; malformed
// IDs go to the dead letter with the reason. [WithVerifiedIDs] also
// dead-letters messages whose ID is not the keyed derivation of their
// content.
package consumer
