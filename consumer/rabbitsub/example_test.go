package rabbitsub_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
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
	if err := c.Run(ctx); err != nil { // returns after in-flight messages are acked
		log.Fatal(err)
	}
}
