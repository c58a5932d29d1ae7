package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// Message types, and the outbox destinations the relay maps to a broker.
const (
	typeOrderPlaced     = "order.placed"     // to RabbitMQ, consumed by billing
	typePaymentCaptured = "payment.captured" // to Kafka, consumed by receipts

	destOrders   = "orders"
	destPayments = "payments"
)

// placedOrder is the business data of an order as the shop front sends it:
// the body of POST /orders.
type placedOrder struct {
	Customer string `json:"customer"` // the customer's email
	Number   string `json:"number"`   // the order number, unique per customer
	Items    []item `json:"items"`
}

type item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Cents    int    `json:"cents"` // unit price
}

// sampleOrders are the orders the demo places. Two customers use the same
// order number (their orders still get different IDs), and one product
// appears in two orders (it gets the same ID in both).
func sampleOrders() []placedOrder {
	return []placedOrder{
		{Customer: "ada@example.com", Number: "SO-1001", Items: []item{{"KB-104", 1, 8900}, {"USB-C-2M", 2, 1200}}},
		{Customer: "grace@example.com", Number: "SO-1001", Items: []item{{"MON-27", 1, 24900}}},
		{Customer: "Ada@Example.com ", Number: "SO-1002", Items: []item{{"USB-C-2M", 1, 1200}}},
	}
}

// ids are the generators of the shop's entities and messages. Safe for
// concurrent use.
type ids struct {
	users, products, orders, payments, messages *forge.Generator
}

func newIDs(namespace string) (ids, error) {
	var g ids
	for _, x := range []struct {
		gen  **forge.Generator
		kind string
	}{{&g.users, "users"}, {&g.products, "products"}, {&g.orders, "orders"}, {&g.payments, "payments"}, {&g.messages, "messages"}} {
		gen, err := forge.New(x.kind + "." + namespace)
		if err != nil {
			return ids{}, err
		}
		*x.gen = gen
	}
	return g, nil
}

// email normalises an address, so that "Ada@Example.com " and
// "ada@example.com" are the same customer with the same user ID.
func email(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// orderDoc is an order with all its IDs: the body of order.placed.
type orderDoc struct {
	ID         uuid.UUID `json:"id"`
	UserID     uuid.UUID `json:"user_id"`
	Customer   string    `json:"customer"`
	Number     string    `json:"number"`
	TotalCents int       `json:"total_cents"`
	Items      []itemDoc `json:"items"`
}

type itemDoc struct {
	ProductID uuid.UUID `json:"product_id"`
	SKU       string    `json:"sku"`
	Quantity  int       `json:"quantity"`
	Cents     int       `json:"cents"`
}

// receipt is a paid order: the body of payment.captured, and what the
// receipts consumer writes to Redis and to the file store, with the IDs of
// the two messages it came through.
type receipt struct {
	orderDoc
	PaymentID        uuid.UUID `json:"payment_id"`
	OrderMessageID   uuid.UUID `json:"order_message_id,omitempty"`
	PaymentMessageID uuid.UUID `json:"payment_message_id,omitempty"`
}

// doc computes every ID of o from its business data alone. The HTTP handler
// and the consistency check both call it; nothing is looked up.
func (g ids) doc(o placedOrder) (orderDoc, error) {
	customer := email(o.Customer)
	if customer == "" || o.Number == "" || len(o.Items) == 0 {
		return orderDoc{}, fmt.Errorf("order %q of %q: customer, number and items are required", o.Number, o.Customer)
	}
	d := orderDoc{Customer: customer, Number: o.Number}
	var err error
	if d.UserID, err = g.users.ID(customer); err != nil {
		return orderDoc{}, err
	}
	if d.ID, err = g.orders.ID(customer, o.Number); err != nil {
		return orderDoc{}, err
	}
	for _, it := range o.Items {
		if it.SKU == "" || it.Quantity < 1 || it.Cents < 0 {
			return orderDoc{}, fmt.Errorf("order %q of %q: item %q: a SKU, a positive quantity and a price are required", o.Number, o.Customer, it.SKU)
		}
		pid, err := g.products.ID(it.SKU)
		if err != nil {
			return orderDoc{}, err
		}
		d.Items = append(d.Items, itemDoc{ProductID: pid, SKU: it.SKU, Quantity: it.Quantity, Cents: it.Cents})
		d.TotalCents += it.Quantity * it.Cents
	}
	slices.SortFunc(d.Items, func(a, b itemDoc) int { return cmp.Compare(a.SKU, b.SKU) })
	return d, nil
}

// paymentID is the ID of the payment of an order: one per order.
func (g ids) paymentID(order uuid.UUID) (uuid.UUID, error) { return g.payments.ID(order.String()) }

// orderPlaced is the order.placed event of d. Its message ID comes from the
// same business key as the order ID, so a retried request carries the same
// ID.
func orderPlaced(d orderDoc) (publisher.Message, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return publisher.Message{}, err
	}
	return publisher.Message{Type: typeOrderPlaced, Key: []any{d.Customer, d.Number}, Body: body}, nil
}

// paymentCaptured is the payment.captured event of r, keyed by the order ID
// (so a Kafka partition keeps one order's events in order). Published by
// the billing handler, its message ID is derived from the order.placed
// message it handles.
func paymentCaptured(r receipt) (publisher.Message, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return publisher.Message{}, err
	}
	return publisher.Message{Type: typePaymentCaptured, Key: []any{r.ID.String()}, Body: body}, nil
}

// messageIDs computes, from the business data alone, the IDs of the two
// messages an order travels through.
func (g ids) messageIDs(ctx context.Context, d orderDoc) (order, payment uuid.UUID, err error) {
	om, err := orderPlaced(d)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	parent, err := publisher.IDs(ctx, g.messages, &om)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	pm, err := paymentCaptured(receipt{orderDoc: d})
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	child, err := publisher.IDs(lineage.NewContext(ctx, parent), g.messages, &pm)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return parent.MessageID, child.MessageID, nil
}

// shop holds the stores: PostgreSQL (the orders, the inbox and the
// outbox), Redis and the file store. Safe for concurrent use.
type shop struct {
	cfg    config
	ids    ids
	pool   *pgxpool.Pool
	rdb    *redis.Client
	inbox  *pgstore.Store
	outbox *pgoutbox.Store
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// openShop connects to PostgreSQL and Redis. It does not create anything.
func openShop(ctx context.Context, cfg config) (*shop, error) {
	if !identifier.MatchString(cfg.Schema) {
		return nil, fmt.Errorf("schema %q: want lower-case letters, digits and underscores", cfg.Schema)
	}
	// Drivers' parse errors quote the URL they were given, password
	// included: check the URLs first, and print them only redacted.
	for _, u := range []struct{ name, url string }{{"RabbitMQ", cfg.AMQPURL}, {"Redis", cfg.RedisURL}, {"PostgreSQL", cfg.PostgresURL}} {
		if err := checkURL(u.name, u.url); err != nil {
			return nil, err
		}
	}
	g, err := newIDs(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	pool, err := pgxpool.New(ctx, cfg.PostgresURL) // pgx prints URLs redacted
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &shop{cfg: cfg, ids: g, pool: pool, rdb: redis.NewClient(opt)}
	// The inbox (the billing consumer's dedupe records) and the outbox live
	// in the shop's schema, next to the orders.
	if s.inbox, err = pgstore.New(pool, pgstore.WithTable(cfg.Schema+".dedupe")); err != nil {
		s.Close()
		return nil, err
	}
	if s.outbox, err = pgoutbox.New(pool, pgoutbox.WithTable(cfg.Schema+".outbox")); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *shop) Close() {
	if s.outbox != nil {
		_ = s.outbox.Close()
	}
	if s.inbox != nil {
		_ = s.inbox.Close()
	}
	s.pool.Close()
	_ = s.rdb.Close()
}

func (s *shop) table(name string) string { return pgx.Identifier{s.cfg.Schema, name}.Sanitize() }

// migrate creates the shop's schema and tables where they do not exist.
func (s *shop) migrate(ctx context.Context) error {
	ddl := fmt.Sprintf(`
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[2]s (
	id          uuid PRIMARY KEY,
	user_id     uuid NOT NULL,
	customer    text NOT NULL,
	number      text NOT NULL,
	total_cents bigint NOT NULL,
	status      text NOT NULL DEFAULT 'placed' CHECK (status IN ('placed', 'paid'))
);
CREATE TABLE IF NOT EXISTS %[3]s (
	order_id   uuid NOT NULL REFERENCES %[2]s (id),
	product_id uuid NOT NULL,
	sku        text NOT NULL,
	quantity   int NOT NULL,
	cents      bigint NOT NULL,
	PRIMARY KEY (order_id, product_id)
);
CREATE TABLE IF NOT EXISTS %[4]s (
	id         uuid PRIMARY KEY,
	order_id   uuid NOT NULL UNIQUE REFERENCES %[2]s (id),
	cents      bigint NOT NULL,
	message_id uuid NOT NULL -- the order.placed message that caused it
);`, pgx.Identifier{s.cfg.Schema}.Sanitize(), s.table("orders"), s.table("order_items"), s.table("payments"))
	if _, err := s.pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("postgres: create schema %s: %w", s.cfg.Schema, err)
	}
	if err := s.inbox.Migrate(ctx); err != nil {
		return err
	}
	return s.outbox.Migrate(ctx)
}

// reset empties every store of the shop: it drops and recreates the
// schema, deletes the Redis keys under the shop's prefix (the receipts and
// the receipts consumer's dedupe records) and purges the RabbitMQ queue.
// The file store is a new directory for each demo run.
func (s *shop) reset(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s.cfg.Schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("postgres: drop schema %s: %w", s.cfg.Schema, err)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	iter := s.rdb.Scan(ctx, 0, s.cfg.RedisPrefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		if err := s.rdb.Del(ctx, iter.Val()).Err(); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return purgeQueue(s.cfg.AMQPURL, s.cfg.Queue)
}

// purgeQueue empties queue, if it exists. url has passed checkURL:
// amqp091-go's parse errors quote the URL.
func purgeQueue(url, queue string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	if _, err := ch.QueuePurge(queue, false); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return nil
		}
		return fmt.Errorf("rabbitmq: purge %s: %w", queue, err)
	}
	return nil
}

// cacheKey is the Redis key of an order's receipt.
func (s *shop) cacheKey(id uuid.UUID) string { return s.cfg.RedisPrefix + "order:" + id.String() }

// filePath spreads receipts over directories named after the order ID's
// first bytes, so no directory grows too large: <dir>/ab/cd/abcd….json.
func (s *shop) filePath(id uuid.UUID) string {
	h := id.String()
	return filepath.Join(s.cfg.Dir, h[0:2], h[2:4], h+".json")
}

// writeFile writes data to path through a temporary file and a rename, so a
// crash never leaves half a file under the final name.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("file: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("file: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("file: %w", err)
	}
	return nil
}
