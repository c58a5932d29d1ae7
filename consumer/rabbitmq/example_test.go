package rabbitmq_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitmq"
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
	dd, err := consumer.Dedupe(store, "orders-service")
	if err != nil {
		log.Fatal(err)
	}
	h := consumer.Chain(
		consumer.Logging(nil),
		consumer.Lineage(),
		dd,
		consumer.Timeout(10*time.Second),
		consumer.Recover(),
	)(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		log.Printf("order %s: %s", m.ID, m.Body)
		return nil
	}))
	c, err := rabbitmq.New(rabbitmq.DialURL("amqp://guest:guest@localhost:5672/"), "orders", h,
		rabbitmq.WithWorkers(8), rabbitmq.WithPrefetch(32),
		rabbitmq.WithDeadLetterQueue("orders.dead-letter"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil { // returns after in-flight messages are acked
		log.Fatal(err)
	}
}
