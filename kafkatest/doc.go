// Package kafkatest runs an in-process Kafka broker for tests and demos, so
// that code using [kafkapub] and [kafkasub] can be tested, and examples run,
// without a Kafka installation.
//
// The broker speaks the Kafka protocol (it is franz-go's kfake) on local TCP
// ports: give [Broker.Brokers] to any Kafka client. By default it has one
// broker node, creates a topic on first use with 3 partitions, and keeps its
// data in memory.
//
// In a test, [Start] returns a broker that stops when the test ends:
//
//	func TestOrders(t *testing.T) {
//		k := kafkatest.Start(t)
//		p, err := kafkapub.New(k.Brokers(), "orders", gen, kafkapub.WithAutoTopicCreation())
//		...
//		n, err := k.TopicSize(ctx, "orders") // records written
//	}
//
// A program (a demo, a local development setup) uses [New] and
// [Broker.Close]. With [WithDataDir] and [WithPorts] a broker started again
// has the same addresses, topics, records and committed offsets, which
// [Broker.Restart] uses to simulate a broker outage.
//
// Like a managed Kafka service, it can require TLS ([WithTLS], with
// client certificates too) and SASL authentication ([WithSASLUser]:
// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). It then refuses unauthenticated
// clients, and answers a wrong password with SASL_AUTHENTICATION_FAILED,
// as Kafka does, so that a client's handling of refused credentials can
// be tested:
//
//	k := kafkatest.Start(t, kafkatest.WithTLS(serverTLS),
//		kafkatest.WithSASLUser(kafkatest.SASLScramSHA512, "orders-api", password))
//
// The broker enforces Kafka's record-batch size limit (message.max.bytes,
// 1 048 588 bytes by default; [WithBrokerConfig] changes it), checks
// consumer-group generations on offset commits and supports moving a
// partition's leadership between broker nodes ([Broker.MoveLeader]).
//
// A Broker is safe for concurrent use.
//
// [kafkapub]: https://pkg.go.dev/github.com/uuidforge/uuidforge/publisher/kafkapub
// [kafkasub]: https://pkg.go.dev/github.com/uuidforge/uuidforge/consumer/kafkasub
package kafkatest
