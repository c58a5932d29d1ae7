// Package rabbitpub publishes [publisher.Message] values to RabbitMQ with
// deterministic IDs and publisher confirms, losing nothing.
//
//	gen := forge.MustNew("orders.example.com")
//	p, err := rabbitpub.New("amqp://guest:guest@node1:5672/", gen,
//		rabbitpub.WithFailoverURLs("amqp://guest:guest@node2:5672/"),
//		rabbitpub.WithExchange("orders"), // routing key: the message type
//		rabbitpub.WithTopology(rabbitmq.Topology{
//			Exchanges: []rabbitmq.Exchange{{Name: "orders", Kind: "topic"}},
//			Queues:    []rabbitmq.Queue{{Name: "billing", Type: rabbitmq.Quorum}},
//			Bindings:  []rabbitmq.Binding{{Exchange: "orders", Queue: "billing", Key: "order.*"}},
//		}))
//	if err != nil { ... }
//	defer p.Close()
//	if err := p.Ping(ctx); err != nil { ... } // wrong credentials, vhost or topology: fail now
//	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: body})
//
// To publish every message to one queue, use [WithQueue] (the default
// exchange, with the queue's name as routing key).
//
// # On the wire
//
// Each message carries its message ID, correlation ID and type in the native
// MessageId, CorrelationId and Type properties; its causation ID (when it
// has a parent) in the [lineage.HeaderCausationID] header; its business key,
// when it has one, in the [lineage.HeaderMessageKey] header ("message-key"),
// as a string holding the bytes [publisher.KeyBytes] gives (the key itself
// for a single string part, the canonical JSON array otherwise), which
// consumers read into consumer.Message.Key; and the application headers as
// string values. It is persistent unless [WithTransient].
//
// # Confirms and retries
//
// [Publisher.Publish] returns only once the broker has acked the message;
// nacks, closed channels, lost connections and confirm timeouts lead to the
// message being published again with the same ID, under a back-off, until
// the context ends. Messages are mandatory by default: one that reaches no
// queue fails with [publisher.ErrUnroutable], naming the exchange and the
// routing key. [Publisher.PublishBatch] pipelines the confirms of many
// messages.
//
// Refusals are not retried: credentials or a virtual host the broker
// refuses, and a topology declaration it rejects, fail [Publisher.Ping] and
// every publish at once with an error wrapping [rabbitmq.ErrRefused]; a
// missing exchange or refused access to it fails the message at once.
//
// # Messages rejected before sending
//
// Some messages would be refused by the broker, or by the consumers reading
// them, for their shape alone; sending one would close the connection under
// every message in flight on it. They are rejected before anything is sent
// with an error wrapping [publisher.ErrInvalid]:
//
//   - a body larger than the maximum (publisher.WithMaxBodySize, default
//     [DefaultMaxBodySize]; keep it at or below the broker's
//     max_message_size);
//   - a type, routing key or header name longer than 255 bytes;
//   - a CC or BCC header: RabbitMQ reads them as arrays of extra routing
//     keys (sender-selected distribution) and closes the channel for a
//     string;
//   - properties and headers that do not fit in one frame of the
//     connection's negotiated frame_max (131072 bytes by default): the
//     content header cannot be split, and the broker closes the connection
//     (FRAME_ERROR) on one too big. Headers of up to 4096 bytes fit in any
//     connection; for bigger ones a publisher that never connected connects
//     first to learn the limit;
//   - more than [MaxHeaders] (8192) header entries, the publisher's own
//     included: amqp091-go's reader refuses a bigger table and closes the
//     connection of the consumer that receives it.
//
// Header values are strings (publisher.Message.Headers, and the headers an
// observer sets), so the value types and nesting amqp091-go's reader refuses
// (tables nested deeper than 32 levels) cannot occur. The headers a
// [publisher.Observer] adds in PublishStart are checked in the same way; a
// message they make unsendable fails with its PublishDone called.
//
// # Connections
//
// The publisher dials and re-dials the connection itself, through
// [rabbitmq.Endpoints] (the URL given to New, then those of
// [WithFailoverURLs], in turn); do not enable the client's Recovery option,
// which completes pending confirms as not-acked. It watches
// connection.blocked, so that a publish never waits past its context on a
// blocked broker. URLs appear in errors and in the printed form of a
// Publisher with their password redacted.
//
// # Observers
//
// With publisher.WithObserver, the observer's PublishStart is called once
// per message after stamping (headers it sets travel with the message),
// PublishRetry before each new attempt, and PublishDone once with the final
// result, with System "rabbitmq", the exchange as Destination and the
// routing key. Without an observer the publisher does no observer work and
// allocates nothing for it.
//
// Because a message can be stored twice (its ack lost with the connection),
// consumers must deduplicate by message ID.
package rabbitpub
