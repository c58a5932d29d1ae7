package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// A relay process: it publishes the outbox's "orders" records to a
// RabbitMQ exchange and its "audit" records to a Kafka topic until
// SIGTERM. Run it in as many processes as you like. (Compile-only: it needs
// PostgreSQL and the brokers.)
func ExampleRelay() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgoutbox.New(pool, pgoutbox.WithJanitor(time.Minute, func(err error) { log.Print(err) }))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	gen := forge.MustNew("orders.example.com")
	orders, err := rabbitpub.New("amqp://app:secret@rabbit:5672/", gen, rabbitpub.WithExchange("orders"))
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	audit, err := kafkapub.New([]string{"kafka:9092"}, "audit", gen)
	if err != nil {
		log.Fatal(err)
	}
	defer audit.Close()
	relay, err := outbox.NewRelay(store, map[string]publisher.Publisher{"orders": orders, "audit": audit})
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Run(ctx); err != nil { // returns once the batches in progress are finished
		log.Fatal(err)
	}
}

// A stored record is sent again with exactly the IDs it was stamped with:
// Record.Message sets them explicitly, and the key in its wire form.
func ExampleRecord_Message() {
	gen := forge.MustNew("orders.example.com")
	m := publisher.Message{Type: "order.placed", Key: []any{"SO-1001"}, Body: []byte(`{"total":12}`)}
	l, _ := publisher.IDs(context.Background(), gen, &m)
	key, _ := publisher.KeyBytes(m.Key)
	rec := outbox.Record{Destination: "orders", ID: l.MessageID, CorrelationID: l.CorrelationID,
		Type: m.Type, Key: key, Body: m.Body}

	again := rec.Message()
	l2, _ := publisher.IDs(context.Background(), gen, &again)
	wire, _ := publisher.KeyBytes(again.Key)
	fmt.Println(l2.MessageID == l.MessageID, l2.CorrelationID == l.CorrelationID, string(wire))
	// Output: true true SO-1001
}
