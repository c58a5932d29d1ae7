package pgoutbox_test

import (
	"context"
	"encoding/json"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// An HTTP handler inserts an order and enqueues order.placed in one
// transaction: the event exists if and only if the order does, and a relay
// publishes it after the commit. A retried request enqueues the same
// message ID, which is stored once. (Compile-only: it needs PostgreSQL.)
func ExamplePublisher_httpHandler() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := pgoutbox.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	orders, err := pgoutbox.NewPublisher(store, "orders", forge.MustNew("orders.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var o struct {
			ID    string `json:"id"`
			Total int64  `json:"total"`
		}
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		err := pgx.BeginFunc(r.Context(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(r.Context(), "INSERT INTO orders (id, total) VALUES ($1, $2) ON CONFLICT DO NOTHING", o.ID, o.Total); err != nil {
				return err
			}
			body, _ := json.Marshal(o)
			return orders.Publish(pgoutbox.NewContext(r.Context(), tx),
				publisher.Message{Type: "order.placed", Key: []any{o.ID}, Body: body})
		})
		if err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
}

// billing handles order.placed inside the PostgreSQL inbox and publishes
// invoice.issued through whatever publisher.Publisher it is given.
type billing struct{ pub publisher.Publisher }

func (b billing) Handle(ctx context.Context, m *consumer.Message) error {
	tx, _ := pgstore.TxFromContext(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO invoices (order_key, body) VALUES ($1, $2)", string(m.Key), m.Body); err != nil {
		return err
	}
	return b.pub.Publish(ctx, publisher.Message{Type: "invoice.issued", Key: []any{string(m.Key)}, Body: m.Body})
}

// A handler run by the inbox publishes through the outbox by being given
// an outbox publisher instead of a broker one: its invoice row, the
// message's completion and invoice.issued commit together or not at all.
// (Compile-only: it needs PostgreSQL.)
func ExamplePublisher_inbox() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	gen := forge.MustNew("billing.example.com")
	inbox, err := pgstore.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	if err := inbox.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	store, err := pgoutbox.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	invoices, err := pgoutbox.NewPublisher(store, "invoices", gen) // a rabbitpub or kafkapub publisher here would publish directly
	if err != nil {
		log.Fatal(err)
	}
	h, err := consumer.NewHandler(billing{pub: invoices}, consumer.WithDedupe(inbox, "billing"))
	if err != nil {
		log.Fatal(err)
	}
	_ = h // give it to rabbitsub.New or kafkasub.New (which build the same chain from the same options)
}

// Operators list dead records with their reason and redrive them once the
// cause is fixed. (Compile-only: it needs PostgreSQL.)
func ExampleStore_Dead() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := pgoutbox.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	dead, err := store.Dead(ctx, "orders", 0, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range dead {
		log.Printf("%d %s %s: %s", r.Seq, r.ID, r.Type, r.LastError)
	}
	n, err := store.RedriveAll(ctx, "orders", 0)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%d records redriven", n)
	backlog, err := store.Backlog(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range backlog {
		log.Printf("%s: %d pending, oldest %v old, %d dead", b.Destination, b.Pending, b.Age, b.Dead)
	}
}
