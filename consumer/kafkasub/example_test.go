package kafkasub_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
)

// Consume a topic in a consumer group, three partitions at a time, once per
// message ID, until SIGTERM. Failing records are retried in place and, after
// five attempts, written to "orders.dead-letter" before their offset is
// committed.
func ExampleNew() {
	store, err := dedupe.NewMemory()
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		log.Printf("%s partition %d offset %d: %s", m.ID, m.Partition, m.Offset, m.Body)
		return nil
	})
	c, err := kafkasub.New([]string{"localhost:9092"}, "orders", "billing", handle,
		consumer.WithDedupe(store, "billing"),
		consumer.WithMaxAttempts(5),
		kafkasub.WithPartitionParallelism(3))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil { // commits only processed records
		log.Fatal(err)
	}
}
