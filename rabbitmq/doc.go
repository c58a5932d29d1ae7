// Package rabbitmq holds what the RabbitMQ publisher (package rabbitpub) and
// consumer (package rabbitsub) share: dialing one of several broker URLs
// with refusals reported at once ([Endpoints], [ErrRefused]), URLs checked
// ([ParseURL]) and printed without their password ([Redact]), a small declarative [Topology]
// (exchanges, classic or quorum queues, bindings, dead-letter routing)
// declared on every connect, and the frame arithmetic that keeps a message
// within what the broker accepts ([HeaderFrameSize]).
//
//	topo := rabbitmq.Topology{
//		Exchanges: []rabbitmq.Exchange{{Name: "orders", Kind: "topic"}},
//		Queues:    []rabbitmq.Queue{{Name: "billing", Type: rabbitmq.Quorum, DeliveryLimit: 5}},
//		Bindings:  []rabbitmq.Binding{{Exchange: "orders", Queue: "billing", Key: "order.*"}},
//	}
//	pub, err := rabbitpub.New(url, gen, rabbitpub.WithExchange("orders"), rabbitpub.WithTopology(topo))
//	sub, err := rabbitsub.New(url, "billing", handle, rabbitsub.WithTopology(topo))
//
// Importing this package compiles amqp091-go; packages forge, publisher and
// consumer stay free of it.
package rabbitmq
