package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// config is what one run uses.
type config struct {
	AMQPURL, RedisURL, PostgresURL string
	Namespace                      string        // the shop's namespace; entity namespaces derive from it
	Schema                         string        // PostgreSQL schema the run recreates and owns
	Queue                          string        // RabbitMQ queue the orders travel through
	Dir                            string        // root of the file store; "" means a new temporary directory
	CacheTTL                       time.Duration // lifetime of the Redis entries
	Timeout                        time.Duration
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.AMQPURL, "amqp", env(testenv.EnvAMQP, testenv.DefaultAMQPURL), "RabbitMQ URL")
	flag.StringVar(&cfg.RedisURL, "redis", env(testenv.EnvRedis, testenv.DefaultRedisURL), "Redis URL")
	flag.StringVar(&cfg.PostgresURL, "postgres", env(testenv.EnvPostgres, testenv.DefaultPostgresURL), "PostgreSQL URL")
	flag.StringVar(&cfg.Namespace, "namespace", "shop.example.com", "namespace of the shop's IDs")
	flag.StringVar(&cfg.Schema, "schema", "uuidforge_orders_example", "PostgreSQL schema to (re)create for this run")
	flag.StringVar(&cfg.Queue, "queue", "uuidforge.orders.example", "RabbitMQ queue")
	flag.StringVar(&cfg.Dir, "dir", "", "root directory of the file store (default: a new temporary directory)")
	flag.DurationVar(&cfg.CacheTTL, "cache-ttl", time.Hour, "lifetime of the Redis cache entries")
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// placedOrder is the business data of an order as the shop front sends it.
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

// sampleOrders are the orders the example places. Two customers use the same
// order number (their orders still get different IDs), and one product appears
// in two orders (it gets the same ID in both).
func sampleOrders() []placedOrder {
	return []placedOrder{
		{Customer: "ada@example.com", Number: "SO-1001", Items: []item{{"KB-104", 1, 8900}, {"USB-C-2M", 2, 1200}}},
		{Customer: "grace@example.com", Number: "SO-1001", Items: []item{{"MON-27", 1, 24900}}},
		{Customer: "Ada@Example.com ", Number: "SO-1002", Items: []item{{"USB-C-2M", 1, 1200}}},
	}
}

// ids are the generators of the shop's entities. Safe for concurrent use.
type ids struct {
	users, products, orders, messages *forge.Generator
}

func newIDs(namespace string) (ids, error) {
	var g ids
	for _, x := range []struct {
		gen  **forge.Generator
		kind string
	}{{&g.users, "users"}, {&g.products, "products"}, {&g.orders, "orders"}, {&g.messages, "messages"}} {
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

// orderDoc is an order with all its IDs, as the cache and the file store hold
// it.
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

// doc computes every ID of o from its business data alone. The consumer and
// the consistency check both call it; nothing is looked up.
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

// message is the order.placed event for o. Its message ID comes from the same
// business key as the order ID, so a producer retry carries the same ID.
func (o placedOrder) message() (publisher.Message, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return publisher.Message{}, err
	}
	return publisher.Message{Type: "order.placed", Key: []any{email(o.Customer), o.Number}, Body: body}, nil
}

// shop holds the three stores. Safe for concurrent use.
type shop struct {
	ids    ids
	pool   *pgxpool.Pool
	rdb    *redis.Client
	dir    string
	schema string
	ttl    time.Duration
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func openShop(ctx context.Context, cfg config) (*shop, error) {
	if !identifier.MatchString(cfg.Schema) {
		return nil, fmt.Errorf("schema %q: want lower-case letters, digits and underscores", cfg.Schema)
	}
	g, err := newIDs(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, cfg.PostgresURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return &shop{ids: g, pool: pool, rdb: redis.NewClient(opt), dir: cfg.Dir, schema: cfg.Schema, ttl: cfg.CacheTTL}, nil
}

func (s *shop) Close() {
	s.pool.Close()
	_ = s.rdb.Close()
}

func (s *shop) table(name string) string { return pgx.Identifier{s.schema, name}.Sanitize() }

// reset recreates the example's schema with its tables.
func (s *shop) reset(ctx context.Context) error {
	schema := pgx.Identifier{s.schema}.Sanitize()
	ddl := fmt.Sprintf(`
DROP SCHEMA IF EXISTS %[1]s CASCADE;
CREATE SCHEMA %[1]s;
CREATE TABLE %[2]s (
	id          uuid PRIMARY KEY,
	user_id     uuid NOT NULL,
	customer    text NOT NULL,
	number      text NOT NULL,
	total_cents bigint NOT NULL,
	status      text NOT NULL
);
CREATE TABLE %[3]s (
	order_id   uuid NOT NULL REFERENCES %[2]s (id),
	product_id uuid NOT NULL,
	sku        text NOT NULL,
	quantity   int NOT NULL,
	cents      bigint NOT NULL,
	PRIMARY KEY (order_id, product_id)
);`, schema, s.table("orders"), s.table("order_items"))
	if _, err := s.pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("postgres: create schema %s: %w", s.schema, err)
	}
	return nil
}

func cacheKey(id uuid.UUID) string { return "order:" + id.String() }

// filePath spreads files over directories named after the ID's first bytes,
// so no directory grows too large: <dir>/ab/cd/abcd….json.
func (s *shop) filePath(id uuid.UUID) string {
	h := id.String()
	return filepath.Join(s.dir, h[0:2], h[2:4], h+".json")
}

// store writes d to all three stores. tx is the inbox's transaction: the
// PostgreSQL rows commit together with the message's dedupe record.
func (s *shop) store(ctx context.Context, tx pgx.Tx, d orderDoc) error {
	if _, err := tx.Exec(ctx, "INSERT INTO "+s.table("orders")+" (id, user_id, customer, number, total_cents, status) VALUES ($1, $2, $3, $4, $5, 'placed')",
		d.ID, d.UserID, d.Customer, d.Number, d.TotalCents); err != nil {
		return fmt.Errorf("postgres: insert order %s: %w", d.ID, err)
	}
	for _, it := range d.Items {
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.table("order_items")+" (order_id, product_id, sku, quantity, cents) VALUES ($1, $2, $3, $4, $5)",
			d.ID, it.ProductID, it.SKU, it.Quantity, it.Cents); err != nil {
			return fmt.Errorf("postgres: insert item %s of order %s: %w", it.SKU, d.ID, err)
		}
	}
	doc, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := s.rdb.Set(ctx, cacheKey(d.ID), doc, s.ttl).Err(); err != nil {
		return fmt.Errorf("redis: set %s: %w", cacheKey(d.ID), err)
	}
	return writeFile(s.filePath(d.ID), doc)
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

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "uuidforge-orders-")
		if err != nil {
			return err
		}
		cfg.Dir = dir
	}
	s, err := openShop(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.reset(ctx); err != nil {
		return err
	}
	inbox, err := pgstore.New(s.pool, pgstore.WithTable(cfg.Schema+".dedupe"))
	if err != nil {
		return err
	}
	defer inbox.Close()
	if err := inbox.Migrate(ctx); err != nil {
		return err
	}
	if err := declareQueue(ctx, cfg.AMQPURL, cfg.Queue); err != nil {
		return err
	}
	fmt.Fprintf(out, "stores: PostgreSQL schema %s, Redis %s, files under %s\n", cfg.Schema, redact(cfg.RedisURL), cfg.Dir)

	// Place the orders; the first one twice, as a producer retry would.
	orders := sampleOrders()
	pub, err := rabbitpub.New(cfg.AMQPURL, s.ids.messages,
		rabbitpub.WithRoutingKey(func(*publisher.Message) string { return cfg.Queue }),
		rabbitpub.WithContentType("application/json"))
	if err != nil {
		return err
	}
	defer pub.Close()
	published := 0
	for _, o := range append(orders, orders[0]) {
		m, err := o.message()
		if err != nil {
			return err
		}
		if err := pub.Publish(ctx, m); err != nil {
			return fmt.Errorf("place order %s of %s: %w", o.Number, o.Customer, err)
		}
		published++
	}
	fmt.Fprintf(out, "placed %d orders through RabbitMQ queue %s (%d messages: order %s of %s sent twice)\n",
		len(orders), cfg.Queue, published, orders[0].Number, email(orders[0].Customer))

	stored, delivered, err := s.consume(ctx, cfg, inbox, published, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "consumer: %d deliveries, %d orders stored, duplicates skipped: %d\n", delivered, stored, delivered-stored)

	rep, err := s.check(ctx, orders, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "consistency: orders=%d consistent=%d mismatches=%d\n", rep.orders, rep.consistent, len(rep.mismatches))
	if len(rep.mismatches) > 0 {
		return fmt.Errorf("%d mismatches between the stores", len(rep.mismatches))
	}
	return nil
}

// redact drops a URL's password for printing.
func redact(raw string) string {
	if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
		return raw[:i+3] + "…" + raw[j:]
	}
	return raw
}

// declareQueue makes sure the queue exists and is empty, so the run sees only
// its own orders.
func declareQueue(ctx context.Context, url, queue string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitmq: declare %s: %w", queue, err)
	}
	if _, err := ch.QueuePurge(queue, false); err != nil {
		return fmt.Errorf("rabbitmq: purge %s: %w", queue, err)
	}
	return ctx.Err()
}

// consume runs the consumer until it has acknowledged want deliveries and
// returns how many orders PostgreSQL holds and how many deliveries were
// acknowledged.
func (s *shop) consume(ctx context.Context, cfg config, inbox *pgstore.Store, want int, out io.Writer) (stored, delivered int, err error) {
	var nDelivered atomic.Int64
	var mu sync.Mutex
	done := make(chan struct{})
	var once sync.Once

	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		var o placedOrder
		if err := json.Unmarshal(m.Body, &o); err != nil {
			return consumer.Permanent(fmt.Errorf("decode order: %w", err))
		}
		d, err := s.ids.doc(o)
		if err != nil {
			return consumer.Permanent(err)
		}
		tx, ok := pgstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no inbox transaction in the context")
		}
		if err := s.store(ctx, tx, d); err != nil {
			return err
		}
		mu.Lock()
		fmt.Fprintf(out, "  order %s of %s: order ID %s, user ID %s, items: %d\n", d.Number, d.Customer, d.ID, d.UserID, len(d.Items))
		mu.Unlock()
		return nil
	})
	countDeliveries := func(next consumer.Handler) consumer.Handler {
		return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			err := next.Handle(ctx, m)
			if err == nil && nDelivered.Add(1) >= int64(want) {
				once.Do(func() { close(done) })
			}
			return err
		})
	}
	dd := consumer.Dedupe(inbox, "orders-example", consumer.WithRetention(dedupe.Forever))
	h := consumer.Chain(countDeliveries, consumer.Lineage(), dd, consumer.Timeout(10*time.Second), consumer.Recover())(handle)
	c, err := rabbitsub.New(cfg.AMQPURL, cfg.Queue, h,
		consumer.WithBackoff(20*time.Millisecond, time.Second))
	if err != nil {
		return 0, 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	select {
	case <-done:
		stop()
		if err := <-runErr; err != nil {
			return 0, 0, fmt.Errorf("consumer: %w", err)
		}
	case err := <-runErr:
		if err == nil {
			err = ctx.Err()
		}
		return 0, 0, fmt.Errorf("consumer stopped after %d of %d deliveries: %w", nDelivered.Load(), want, err)
	}
	// Count what committed, not what the handler attempted.
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+s.table("orders")).Scan(&stored); err != nil {
		return 0, 0, fmt.Errorf("postgres: count orders: %w", err)
	}
	return stored, int(nDelivered.Load()), nil
}

// mismatch is one store that does not hold what the business data says it
// should.
type mismatch struct {
	System, Entity, Expected, Actual string
}

type report struct {
	orders, consistent int
	mismatches         []mismatch
}

// check is the consistency validator: for each order it regenerates the IDs
// from the business data alone and looks the order up in PostgreSQL, Redis
// and the file store, printing one line per order and one per mismatch.
func (s *shop) check(ctx context.Context, orders []placedOrder, out io.Writer) (report, error) {
	var rep report
	for _, o := range orders {
		want, err := s.ids.doc(o)
		if err != nil {
			return rep, err
		}
		rep.orders++
		var found []mismatch
		diff := func(system, entity string, expected, actual any) {
			if fmt.Sprint(expected) != fmt.Sprint(actual) {
				found = append(found, mismatch{system, entity, fmt.Sprint(expected), fmt.Sprint(actual)})
			}
		}

		pg, err := s.fromPostgres(ctx, want.ID)
		if err != nil {
			return rep, err
		}
		compare(diff, "postgres", want, pg)
		cached, err := s.fromRedis(ctx, want.ID)
		if err != nil {
			return rep, err
		}
		compare(diff, "redis "+cacheKey(want.ID), want, cached)
		file, err := s.fromFile(want.ID)
		if err != nil {
			return rep, err
		}
		compare(diff, "file "+s.filePath(want.ID), want, file)

		status := "found in postgres, redis and file"
		if len(found) == 0 {
			rep.consistent++
		} else {
			status = fmt.Sprintf("%d mismatches", len(found))
		}
		fmt.Fprintf(out, "check order %s of %s: expected %s, %s\n", want.Number, want.Customer, want.ID, status)
		for _, m := range found {
			fmt.Fprintf(out, "  MISMATCH %s %s: expected %s, actual %s\n", m.System, m.Entity, m.Expected, m.Actual)
		}
		rep.mismatches = append(rep.mismatches, found...)
	}
	return rep, nil
}

// compare reports every field of got that differs from want; a nil got means
// the store does not have the order at all.
func compare(diff func(system, entity string, expected, actual any), system string, want orderDoc, got *orderDoc) {
	if got == nil {
		diff(system, "order", want.ID, "missing")
		return
	}
	diff(system, "order id", want.ID, got.ID)
	diff(system, "user_id", want.UserID, got.UserID)
	diff(system, "total_cents", want.TotalCents, got.TotalCents)
	products := func(items []itemDoc) string {
		var p []string
		for _, it := range items {
			p = append(p, fmt.Sprintf("%s=%s×%d", it.SKU, it.ProductID, it.Quantity))
		}
		return "[" + strings.Join(p, " ") + "]"
	}
	diff(system, "items", products(want.Items), products(got.Items))
}

func (s *shop) fromPostgres(ctx context.Context, id uuid.UUID) (*orderDoc, error) {
	var d orderDoc
	err := s.pool.QueryRow(ctx, "SELECT id, user_id, customer, number, total_cents FROM "+s.table("orders")+" WHERE id = $1", id).
		Scan(&d.ID, &d.UserID, &d.Customer, &d.Number, &d.TotalCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read order %s: %w", id, err)
	}
	rows, err := s.pool.Query(ctx, "SELECT product_id, sku, quantity, cents FROM "+s.table("order_items")+" WHERE order_id = $1 ORDER BY sku", id)
	if err != nil {
		return nil, fmt.Errorf("postgres: read items of %s: %w", id, err)
	}
	d.Items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (itemDoc, error) {
		var it itemDoc
		return it, r.Scan(&it.ProductID, &it.SKU, &it.Quantity, &it.Cents)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read items of %s: %w", id, err)
	}
	return &d, nil
}

func (s *shop) fromRedis(ctx context.Context, id uuid.UUID) (*orderDoc, error) {
	b, err := s.rdb.Get(ctx, cacheKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: get %s: %w", cacheKey(id), err)
	}
	return decodeDoc(b, "redis "+cacheKey(id))
}

func (s *shop) fromFile(id uuid.UUID) (*orderDoc, error) {
	b, err := os.ReadFile(s.filePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	return decodeDoc(b, "file "+s.filePath(id))
}

// decodeDoc decodes a stored order; an undecodable one is reported as an
// order with no fields, i.e. as a mismatch, not as an error.
func decodeDoc(b []byte, where string) (*orderDoc, error) {
	var d orderDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return &orderDoc{Customer: "undecodable " + where}, nil
	}
	return &d, nil
}
