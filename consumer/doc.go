// Package consumer runs a handler once per message ID, however often a broker
// or a producer delivers the message, without losing a message to a failure,
// a crash or a restart.
//
// A [Handler] processes one transport-neutral [Message]; [Middleware] wraps
// handlers like net/http middleware and [Chain] composes them. The
// middlewares are [Recover], [Lineage], [Dedupe], [Retry], [DeadLetter],
// [Timeout] and [Logging]; see [Chain] for the recommended order. The
// transport loops live in the subpackages rabbitmq and kafka; both retry a
// failing message in place ([Processor]), dead-letter it after N attempts,
// and acknowledge or commit only after the handler succeeded and the dedupe
// completion is stored.
//
//	store, err := dedupe.NewMemory()
//	if err != nil { ... }
//	dd, err := consumer.Dedupe(store, "billing")
//	if err != nil { ... }
//	h := consumer.Chain(
//		consumer.Logging(nil),
//		consumer.Lineage(),
//		dd,
//		consumer.Timeout(10*time.Second),
//		consumer.Recover(),
//	)(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
//		return charge(ctx, m.ID, m.Body)
//	}))
//	c, err := rabbitmq.New(rabbitmq.DialURL(url), "billing", h)
//	if err != nil { ... }
//	err = c.Run(ctx) // until ctx is done
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
// Messages without an ID get a content ID ([ContentID], see
// forge/SPEC.md (section "Content IDs")) unless [MissingIDDeadLetter] is chosen; malformed IDs
// go to the dead letter with the reason.
package consumer
