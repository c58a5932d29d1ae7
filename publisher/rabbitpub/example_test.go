package rabbitpub_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// Publishing needs a broker, so this example is compiled but not run.
func ExampleNew() {
	gen := forge.MustNew("orders.example.com")
	p, err := rabbitpub.New("amqp://guest:guest@localhost:5672/", gen,
		rabbitpub.WithFailoverURLs("amqp://guest:guest@localhost:5673/"), // another node of the cluster
		rabbitpub.WithExchange("orders"),                                 // routing key: the message type
		rabbitpub.WithTopology(rabbitmq.Topology{
			Exchanges: []rabbitmq.Exchange{{Name: "orders", Kind: "topic"}},
			Queues:    []rabbitmq.Queue{{Name: "billing", Type: rabbitmq.Quorum}},
			Bindings:  []rabbitmq.Binding{{Exchange: "orders", Queue: "billing", Key: "order.*"}},
		}),
		rabbitpub.WithConfirmTimeout(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Fail fast: wrong credentials, an unknown virtual host or a topology
	// the broker rejects are reported now, as rabbitmq.ErrRefused.
	if err := p.Ping(ctx); err != nil {
		log.Fatal(err)
	}
	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`)})
	switch {
	case errors.Is(err, publisher.ErrUnroutable):
		log.Print(err) // names the exchange and the routing key
	case err != nil:
		log.Fatal(err)
	}
}

// Every message to one queue, through the default exchange.
func ExampleWithQueue() {
	gen := forge.MustNew("orders.example.com")
	p, err := rabbitpub.New("amqp://guest:guest@localhost:5672/", gen,
		rabbitpub.WithQueue("billing"),
		rabbitpub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: "billing", Type: rabbitmq.Quorum}}}))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	err = p.Publish(context.Background(), publisher.Message{Type: "invoice.requested", Key: []any{"o-1001"}})
	if err != nil {
		log.Fatal(err)
	}
}
