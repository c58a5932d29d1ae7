// Package rabbitmq publishes [publisher.Message] values to RabbitMQ with
// deterministic IDs and publisher confirms, losing nothing.
//
// Each message carries its message ID, correlation ID and type in the native
// MessageId, CorrelationId and Type properties and its causation ID in the
// [HeaderCausationID] header; it is persistent unless [WithTransient].
// [Publisher.Publish] returns only once the broker has acked the message;
// nacks, closed channels, lost connections and confirm timeouts lead to the
// message being published again with the same ID, under a back-off, until
// the context ends. Messages are mandatory by default: one that reaches no
// queue fails with [publisher.ErrUnroutable]. [Publisher.PublishBatch]
// pipelines the confirms of many messages.
//
//	gen := forge.MustNew("orders.example.com")
//	p, err := rabbitmq.New("amqp://guest:guest@localhost:5672/", gen, rabbitmq.WithExchange("orders"))
//	if err != nil { ... }
//	defer p.Close()
//	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: body})
//
// The publisher dials and re-dials the connection itself (do not enable the
// client's Recovery option, which completes pending confirms as not-acked)
// and watches connection.blocked, so that a publish never waits past its
// context on a blocked broker.
//
// Because a message can be stored twice (its ack lost with the connection),
// consumers must deduplicate by message ID.
package rabbitpub
