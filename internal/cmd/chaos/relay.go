package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// runRelay runs an outbox relay until ctx ends: order.placed records go to
// the run's RabbitMQ queue, payment.captured records to its Kafka topic.
func runRelay(ctx context.Context, pool *pgxpool.Pool, cfg workerConfig, logger *slog.Logger) error {
	store, err := pgoutbox.New(pool, pgoutbox.WithTable(cfg.tables.outbox()))
	if err != nil {
		return err
	}
	defer store.Close()
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	rp, err := rabbitpub.New(cfg.amqp, gen, rabbitpub.WithQueue(cfg.queue), rabbitpub.WithConfirmTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer rp.Close()
	kp, err := kafkapub.New([]string{cfg.kafka}, cfg.topic, gen, kafkapub.WithWriteTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer kp.Close()
	relay, err := outbox.NewRelay(store, map[string]publisher.Publisher{destOrders: rp, destPayments: kp},
		// Every fault is over within seconds: try again soon.
		outbox.WithBackoff(50*time.Millisecond, time.Second),
		outbox.WithPollInterval(250*time.Millisecond),
		outbox.WithPublishTimeout(10*time.Second),
		outbox.WithBatchSize(100),
		outbox.WithLogger(logger))
	if err != nil {
		return err
	}
	if err := relay.Run(ctx); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}
