// Package wmkafka is a Watermill Pub/Sub (message.Publisher and
// message.Subscriber) over UUID-Forge's Kafka publisher and consumer
// (packages kafkapub and kafkasub): acknowledged writes retried with
// backoff, offsets committed only after a message is done, deterministic
// IDs, lineage, and deduplication with any dedupe.Store, for a Watermill
// router.
//
//	gen := forge.MustNew("orders.example.com")
//	pub, err := wmkafka.NewPublisher(brokers, gen)
//	...
//	sub, err := wmkafka.NewSubscriber(brokers, "billing", // the consumer group
//		wmkafka.WithDedupe(store)) // once per message ID, group and topic
//	...
//	router.AddHandler("billing", "orders", sub, "invoices", pub, handle)
//
// The record key is the message's business key (metadata
// wmforge.MetadataMessageKey, set by wmforge.NewMessage), so one entity's
// messages stay in one partition, in order.
//
// Nacks: Watermill expects a nacked message to be delivered again and never
// skipped, and that is the default here — the record is redelivered in
// place after the consumer's backoff, without limit, and nothing after it
// in its partition is committed meanwhile. Our consumers' default (5
// attempts, then the dead-letter topic) is available with
// [WithDeadLetterAfter].
//
// A cluster that requires TLS or SASL (as managed Kafka services do) is
// reached with [WithTLS] and [WithSASL], given to both the publisher and
// the subscriber.
//
// The adapter passes Watermill's universal Pub/Sub test suite
// (pubsub/tests.TestPubSub), with and without deduplication; see this
// module's tests for the features declared.
package wmkafka
