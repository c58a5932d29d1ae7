package rabbitsub_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// Consume a queue once per message ID, dead-lettering poison messages to
// "orders.dead-letter", until SIGTERM.
func ExampleNew() {
	store, err := dedupe.NewMemory()
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		log.Printf("order %s (key %s): %s", m.ID, m.Key, m.Body)
		return nil
	})
	c, err := rabbitsub.New("amqp://guest:guest@localhost:5672/", "orders", handle,
		consumer.WithDedupe(store, "orders-service"),
		consumer.WithTimeout(10*time.Second),
		rabbitsub.WithWorkers(8), rabbitsub.WithPrefetch(32))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := c.Ping(ctx); err != nil { // wrong credentials, virtual host or queue: fail now
		log.Fatal(err)
	}
	if err := c.Run(ctx); err != nil { // returns after in-flight messages are acked
		log.Fatal(err)
	}
}

// Declare a quorum queue with a delivery limit and its dead-letter queue on
// every connect, and consume it.
func ExampleWithTopology() {
	topo := rabbitmq.Topology{Queues: []rabbitmq.Queue{
		{Name: "orders.dead-letter", Type: rabbitmq.Quorum},
		{Name: "orders", Type: rabbitmq.Quorum, DeliveryLimit: 5, DeadLetterRoutingKey: "orders.dead-letter"},
	}}
	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error { return nil })
	c, err := rabbitsub.New("amqp://guest:guest@localhost:5672/", "orders", handle,
		rabbitsub.WithTopology(topo),
		rabbitsub.WithFailoverURLs("amqp://guest:guest@rabbit-2:5672/", "amqp://guest:guest@rabbit-3:5672/"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// List the dead letters of a queue with their reasons, whether plain
// copies or envelopes.
func ExampleParseDeadLetter() {
	conn, err := amqp.Dial("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		log.Fatal(err)
	}
	for {
		d, ok, err := ch.Get("orders.dead-letter", false)
		if err != nil || !ok {
			break
		}
		dl, err := rabbitsub.ParseDeadLetter(d)
		if err != nil {
			log.Printf("%s: %v", d.MessageId, err)
			continue
		}
		log.Printf("%s from %s after %d attempt(s): %s (%d body bytes, envelope %v)",
			dl.Message.MessageId, dl.Queue, dl.Attempts, dl.Reason, len(dl.Message.Body), dl.Envelope)
	}
}
