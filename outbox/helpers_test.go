package outbox_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

var gen = forge.MustNew("outbox.test.uuidforge")

// newPool connects to the test database with room for a few relays.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a store on a migrated table of its own, dropped when the
// test ends.
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...pgoutbox.Option) *pgoutbox.Store {
	t.Helper()
	table := testenv.Name(t, "ob")
	s, err := pgoutbox.New(pool, append([]pgoutbox.Option{pgoutbox.WithTable(table)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		testenv.DropTables(t, s.Table())
	})
	return s
}

// sameStore returns another store (another process's view) on s's table,
// with its own pool.
func sameStore(t testing.TB, s *pgoutbox.Store) *pgoutbox.Store {
	t.Helper()
	o, err := pgoutbox.New(newPool(t), pgoutbox.WithTable(unquote(s.Table())))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func unquote(s string) string { return s[1 : len(s)-1] }

func newPublisher(t testing.TB, s *pgoutbox.Store, destination string, opts ...publisher.Option) *pgoutbox.Publisher {
	t.Helper()
	p, err := pgoutbox.NewPublisher(s, destination, gen, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enqueue stores msgs for p in one transaction.
func enqueue(t testing.TB, pool *pgxpool.Pool, p *pgoutbox.Publisher, msgs ...publisher.Message) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return p.PublishBatch(pgoutbox.NewContext(ctx, tx), msgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// countRows returns the number of rows of s in state ("" for all).
func countRows(t testing.TB, pool *pgxpool.Pool, s *pgoutbox.Store, state outbox.State) int {
	t.Helper()
	var n int
	err := pool.QueryRow(testenv.Context(t, 10*time.Second),
		"SELECT count(*) FROM "+s.Table()+" WHERE $1 = '' OR state = $1", string(state)).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runRelay runs a relay until the test ends (or until the returned stop is
// called) and checks that Run returned nil.
func runRelay(t testing.TB, s outbox.Store, pubs map[string]publisher.Publisher, opts ...outbox.Option) (stop func()) {
	t.Helper()
	opts = append([]outbox.Option{outbox.WithPollInterval(100 * time.Millisecond),
		outbox.WithBackoff(20*time.Millisecond, 200*time.Millisecond), outbox.WithLogger(testLogger(t))}, opts...)
	r, err := outbox.NewRelay(s, pubs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rabbit is a queue of its own on the test broker, and a publisher whose
// messages go to it (the default exchange, routing key = queue name,
// unless a record carries its own).
type rabbit struct {
	url, queue string
	ch         *amqp.Channel
}

func newRabbit(t testing.TB) *rabbit {
	t.Helper()
	url := testenv.AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "q")
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(q, false, false, false) })
	return &rabbit{url: url, queue: q, ch: ch}
}

// publisher returns a RabbitMQ publisher into the queue, closed when the
// test ends.
func (r *rabbit) publisher(t testing.TB, opts ...publisher.Option) *rabbitpub.Publisher {
	t.Helper()
	q := r.queue
	opts = append([]publisher.Option{rabbitpub.WithRoutingKey(func(*publisher.Message) string { return q })}, opts...)
	p, err := rabbitpub.New(r.url, gen, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// consume delivers the queue's messages, in queue order, on the returned
// channel until the test ends.
func (r *rabbit) consume(t testing.TB) <-chan amqp.Delivery {
	t.Helper()
	ds, err := r.ch.Consume(r.queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// collect receives deliveries until n arrived or d passed.
func collect(t testing.TB, ds <-chan amqp.Delivery, n int, d time.Duration) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	timeout := time.After(d)
	for len(out) < n {
		select {
		case m := <-ds:
			out = append(out, m)
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}

// quiet fails if a delivery arrives within d.
func quiet(t testing.TB, ds <-chan amqp.Delivery, d time.Duration) {
	t.Helper()
	select {
	case m := <-ds:
		t.Fatalf("unexpected message %s (%s)", m.MessageId, m.Type)
	case <-time.After(d):
	}
}

// kafka is a topic of its own on an in-process broker.
type kafka struct {
	brokers []string
	topic   string
}

func newKafka(t testing.TB) *kafka {
	t.Helper()
	return &kafka{brokers: testenv.KafkaBrokers(t), topic: testenv.Name(t, "topic")}
}

func (k *kafka) publisher(t testing.TB) *kafkapub.Publisher {
	t.Helper()
	p, err := kafkapub.New(k.brokers, k.topic, gen, kafkapub.WithAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// read returns the topic's first n records, each partition's in offset
// order (partitions one after the other).
func (k *kafka) read(t testing.TB, n int, d time.Duration) []kafkago.Message {
	t.Helper()
	return k.readUntil(t, d, func(recs []kafkago.Message) bool { return len(recs) >= n })
}

// readUntil reads the topic from the start until done holds for the
// records read so far (each partition's in offset order, partitions one
// after the other), or fails after d.
func (k *kafka) readUntil(t testing.TB, d time.Duration, done func([]kafkago.Message) bool) []kafkago.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu   sync.Mutex
		all  = map[int][]kafkago.Message{}
		wg   sync.WaitGroup
		full = make(chan struct{})
		once sync.Once
	)
	flat := func() []kafkago.Message {
		var out []kafkago.Message
		for p := range 3 {
			out = append(out, all[p]...)
		}
		return out
	}
	for p := range 3 { // testenv's broker: 3 partitions per topic
		wg.Go(func() {
			r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: k.brokers, Topic: k.topic, Partition: p,
				MaxWait: 50 * time.Millisecond, ReadBackoffMin: 10 * time.Millisecond, ReadBackoffMax: 50 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				all[p] = append(all[p], m)
				if done(flat()) {
					once.Do(func() { close(full) })
				}
				mu.Unlock()
			}
		})
	}
	ok := false
	select {
	case <-full:
		ok = true
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	out := flat()
	if !ok {
		t.Fatalf("read %d records without reaching the end", len(out))
	}
	return out
}

func header(m kafkago.Message, name string) string {
	for _, h := range m.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// msg is a message of type typ with a single-string key (none when key is
// "") and a body naming both.
func msg(typ, key string) publisher.Message {
	m := publisher.Message{Type: typ, Body: []byte(typ + "/" + key)}
	if key != "" {
		m.Key = []any{key}
	}
	return m
}

// idOf returns the ID msg gets when published without a parent.
func idOf(t testing.TB, m publisher.Message) uuid.UUID {
	t.Helper()
	l, err := publisher.IDs(context.Background(), gen, &m)
	if err != nil {
		t.Fatal(err)
	}
	return l.MessageID
}

// pgxBegin runs fn in a transaction of pool, with the transaction in its
// context for pgoutbox publishers.
func pgxBegin(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return fn(pgoutbox.NewContext(ctx, tx)) })
}

// testLogger logs to t.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
