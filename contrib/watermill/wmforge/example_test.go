package wmforge_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmrabbit"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
)

func ExampleNewMessage() {
	gen := forge.MustNew("orders.example.com")
	a, _ := wmforge.NewMessage(gen, "order.created", []any{"o-1001"}, []byte(`{"total":12}`))
	b, _ := wmforge.NewMessage(gen, "order.created", []any{"o-1001"}, []byte(`{"total":12}`))
	fmt.Println(a.UUID == b.UUID, a.UUID == gen.MustID("order.created", "o-1001").String())
	fmt.Println(a.Metadata.Get(wmforge.MetadataMessageType), a.Metadata.Get(wmforge.MetadataMessageKey))
	// Output:
	// true true
	// order.created o-1001
}

// A router whose handler writes to PostgreSQL through the inbox transaction
// and publishes a message derived from the one it handles.
func ExampleDeduplicator() {
	ctx := context.Background()
	gen := forge.MustNew("orders.example.com")
	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
	if err != nil {
		panic(err)
	}
	store, err := pgstore.New(pool)
	if err != nil {
		panic(err)
	}
	dedup, err := wmforge.NewDeduplicator(store) // scope: the handler's name
	if err != nil {
		panic(err)
	}
	pub, err := wmrabbit.NewPublisher("amqp://guest:guest@localhost:5672/", gen)
	if err != nil {
		panic(err)
	}
	sub, err := wmrabbit.NewSubscriber("amqp://guest:guest@localhost:5672/")
	if err != nil {
		panic(err)
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NewSlogLogger(nil))
	if err != nil {
		panic(err)
	}
	router.AddMiddleware(dedup.Middleware, middleware.CorrelationID, middleware.Retry{MaxRetries: 3}.Middleware)
	router.AddHandler("billing", "orders", sub, "invoices", pub, func(msg *message.Message) ([]*message.Message, error) {
		order := msg.Metadata.Get(wmforge.MetadataMessageKey)
		tx, _ := pgstore.TxFromContext(msg.Context())
		if _, err := tx.Exec(msg.Context(), "INSERT INTO invoices (order_id) VALUES ($1)", order); err != nil {
			return nil, err // rolled back, claim released: delivered again
		}
		out, err := wmforge.NewMessageContext(msg.Context(), gen, "invoice.requested", []any{order}, nil)
		return []*message.Message{out}, err
	})
	_ = router.Run(ctx)
}
