// Package wmrabbit is a Watermill Pub/Sub (message.Publisher and
// message.Subscriber) over UUID-Forge's RabbitMQ publisher and consumer
// (packages rabbitpub and rabbitsub): publisher confirms, reconnection,
// deterministic IDs, lineage, and deduplication with any dedupe.Store, for
// a Watermill router.
//
//	gen := forge.MustNew("orders.example.com")
//	pub, err := wmrabbit.NewPublisher(url, gen)
//	...
//	sub, err := wmrabbit.NewSubscriber(url,
//		wmrabbit.WithDedupe(store), // once per message ID and queue
//		wmrabbit.WithConsumerOptions(rabbitsub.WithPrefetch(32), rabbitsub.WithWorkers(8)))
//	...
//	router.AddHandler("billing", "orders", sub, "invoices", pub, handle)
//
// Topology: by default a topic is a durable queue of that name, reached
// through the default exchange; every subscriber of a topic shares it.
// With [WithExchange] (both sides) and [WithGroup] (subscribers), topics
// are routing keys of one direct exchange and each group reads its own
// queue "<topic>.<group>", so every group receives every message.
//
// Nacks: Watermill expects a nacked message to be delivered again and never
// dropped, and that is the default here — the message is redelivered in
// place after the consumer's backoff, without limit. Our consumers'
// default (5 attempts, then the dead-letter queue) is available with
// [WithDeadLetterAfter].
//
// The adapter passes Watermill's universal Pub/Sub test suite
// (pubsub/tests.TestPubSub), with and without deduplication; see this
// module's tests for the features declared.
package wmrabbit
