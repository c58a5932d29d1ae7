package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// config is what one run uses.
type config struct {
	Store       string // "bolt" or "postgres"
	BoltPath    string // "" means a new file in a temporary directory
	PostgresURL string
	Table       string // PostgreSQL dedupe table, recreated at start
	First, Then int    // payments published before run 1 and between the runs
	Timeout     time.Duration
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.Store, "store", "bolt", `durable dedupe store: "bolt" or "postgres"`)
	flag.StringVar(&cfg.BoltPath, "bolt", "", "bbolt file (default: a new file in a temporary directory)")
	flag.StringVar(&cfg.PostgresURL, "postgres", env(envPostgres, defaultPostgres), "PostgreSQL URL (default: $POSTGRES_URL or a local server)")
	flag.StringVar(&cfg.Table, "table", "uuidforge_replay_example", "PostgreSQL dedupe table (dropped and recreated)")
	flag.IntVar(&cfg.First, "first", 8, "payments published before run 1")
	flag.IntVar(&cfg.Then, "then", 4, "payments published between run 1 and run 2")
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(1)
	}
}

// payment is a captured payment; its reference identifies it.
type payment struct {
	Reference string `json:"reference"`
	Order     string `json:"order"`
	Cents     int    `json:"cents"`
}

func (p payment) message() (publisher.Message, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return publisher.Message{}, err
	}
	return publisher.Message{Type: "payment.captured", Key: []any{p.Reference}, Body: body}, nil
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func run(ctx context.Context, cfg config, out io.Writer) error {
	switch {
	case cfg.Store != "bolt" && cfg.Store != "postgres":
		return fmt.Errorf("store %q: want bolt or postgres", cfg.Store)
	case cfg.Store == "postgres" && !identifier.MatchString(cfg.Table):
		return fmt.Errorf("table %q: want lower-case letters, digits and underscores", cfg.Table)
	case cfg.First < 1 || cfg.Then < 0:
		return fmt.Errorf("want first >= 1 and then >= 0, got %d and %d", cfg.First, cfg.Then)
	}
	if cfg.Store == "postgres" {
		if err := checkURL("PostgreSQL", cfg.PostgresURL); err != nil {
			return err
		}
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	cleanup, err := prepareStore(ctx, &cfg, out)
	if err != nil {
		return err
	}
	defer cleanup()

	brokers, stopKafka, err := startKafka()
	if err != nil {
		return err
	}
	defer stopKafka()
	topic := fmt.Sprintf("replay-payments-%d", time.Now().UnixNano())
	fmt.Fprintf(out, "Kafka at %s, topic %s\n", strings.Join(brokers, ","), topic)

	gen, err := forge.New("payments.example.com")
	if err != nil {
		return err
	}
	pub, err := kafkapub.New(brokers, topic, gen, kafkapub.WithAutoTopicCreation())
	if err != nil {
		return err
	}
	defer pub.Close()

	var ids []uuid.UUID // every payment's message ID, computed from its reference
	publish := func(from, n int) error {
		for i := from; i < from+n; i++ {
			p := payment{Reference: fmt.Sprintf("PAY-%04d", i+1), Order: fmt.Sprintf("SO-%d", 1001+i/2), Cents: 990 + 10*i}
			m, err := p.message()
			if err != nil {
				return err
			}
			l, err := publisher.IDs(ctx, gen, &m)
			if err != nil {
				return err
			}
			if err := pub.Publish(ctx, m); err != nil {
				return fmt.Errorf("publish %s: %w", p.Reference, err)
			}
			ids = append(ids, l.MessageID)
		}
		return nil
	}

	l := &ledger{done: make(map[uuid.UUID]int)}
	if err := publish(0, cfg.First); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d payments\n", cfg.First)
	records, err := kafkatest.TopicSize(ctx, brokers, topic)
	if err != nil {
		return err
	}
	run1, err := l.replay(ctx, cfg, brokers, topic, "ledger-run-1", records)
	if err != nil {
		return fmt.Errorf("run 1: %w", err)
	}
	fmt.Fprintf(out, "run 1: replayed %d records from offset 0, processed %d, skipped %d seen before\n", run1.read, run1.processed, run1.read-run1.processed)

	if err := publish(cfg.First, cfg.Then); err != nil {
		return err
	}
	if records, err = kafkatest.TopicSize(ctx, brokers, topic); err != nil {
		return err
	}
	fmt.Fprintf(out, "published %d more payments (topic now holds %d records)\n", cfg.Then, records)
	run2, err := l.replay(ctx, cfg, brokers, topic, "ledger-run-2", records)
	if err != nil {
		return fmt.Errorf("run 2: %w", err)
	}
	fmt.Fprintf(out, "run 2 (store reopened, new consumer group): replayed %d records from offset 0, processed %d, skipped %d seen before\n",
		run2.read, run2.processed, run2.read-run2.processed)

	lost, twice := 0, 0
	for _, id := range ids {
		switch n := l.times(id); {
		case n == 0:
			lost++
		case n > 1:
			twice++
		}
	}
	fmt.Fprintf(out, "replay: records=%d run1_processed=%d run2_processed=%d run2_skipped=%d processed_twice=%d lost=%d\n",
		records, run1.processed, run2.processed, run2.read-run2.processed, twice, lost)
	if lost != 0 || twice != 0 {
		return fmt.Errorf("not exactly once: %d payments lost, %d processed twice", lost, twice)
	}
	return nil
}

// prepareStore gives the run an empty store: a new bbolt file, or a
// recreated PostgreSQL table. The returned function removes a temporary
// directory it created.
func prepareStore(ctx context.Context, cfg *config, out io.Writer) (cleanup func(), err error) {
	cleanup = func() {}
	if cfg.Store == "bolt" {
		if cfg.BoltPath == "" {
			dir, err := os.MkdirTemp("", "uuidforge-replay-")
			if err != nil {
				return nil, err
			}
			cleanup = func() { _ = os.RemoveAll(dir) }
			cfg.BoltPath = filepath.Join(dir, "dedupe.db")
		}
		if err := os.Remove(cfg.BoltPath); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		fmt.Fprintf(out, "store: bbolt file %s\n", cfg.BoltPath)
		return cleanup, nil
	}
	pool, err := pgxpool.New(ctx, cfg.PostgresURL) // its errors show the URL redacted
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	defer pool.Close()
	// Dropping the table drops its token sequence and index too (see
	// pgstore.DDL); the store recreates them when it opens.
	if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{cfg.Table}.Sanitize()); err != nil {
		return nil, fmt.Errorf("postgres: drop %s: %w", cfg.Table, err)
	}
	fmt.Fprintf(out, "store: PostgreSQL table %s\n", cfg.Table)
	return cleanup, nil
}

// openStore opens the durable store, as a service does when it starts.
func openStore(ctx context.Context, cfg config) (dedupe.Store, func(), error) {
	if cfg.Store == "bolt" {
		s, err := boltstore.Open(cfg.BoltPath, boltstore.WithDefaultRetention(dedupe.Forever))
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	}
	pool, err := pgxpool.New(ctx, cfg.PostgresURL)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	s, err := pgstore.New(pool, pgstore.WithTable(cfg.Table), pgstore.WithDefaultRetention(dedupe.Forever))
	if err == nil {
		err = s.Migrate(ctx)
	}
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return s, func() { _ = s.Close(); pool.Close() }, nil
}

// ledger books captured payments: the handler's effect. Safe for concurrent
// use.
type ledger struct {
	mu   sync.Mutex
	done map[uuid.UUID]int // message ID -> times booked
}

func (l *ledger) times(id uuid.UUID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done[id]
}

func (l *ledger) book(_ context.Context, m *consumer.Message) error {
	var p payment
	if err := json.Unmarshal(m.Body, &p); err != nil {
		return consumer.Permanent(fmt.Errorf("decode payment: %w", err))
	}
	l.mu.Lock()
	l.done[m.ID]++
	l.mu.Unlock()
	return nil
}

type counts struct{ read, processed int }

// replay opens the store, reads the whole topic from offset 0 with a new
// consumer group until want records were acknowledged, and closes the store.
func (l *ledger) replay(ctx context.Context, cfg config, brokers []string, topic, group string, want int) (counts, error) {
	store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return counts{}, err
	}
	defer closeStore()

	count := &counter{want: int64(want), done: make(chan struct{})}
	// The consumer builds the standard chain from its options: each message
	// ID is claimed in the store under the scope "ledger" and, once booked,
	// kept forever, so that any later replay skips it.
	c, err := kafkasub.New(brokers, topic, group, consumer.HandlerFunc(l.book),
		consumer.WithDedupe(store, "ledger"),
		consumer.WithRetention(dedupe.Forever),
		consumer.WithObserver(count),
		kafkasub.WithPartitionParallelism(3),
		consumer.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return counts{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	select {
	case <-count.done:
		stop()
		if err := <-runErr; err != nil {
			return counts{}, err
		}
	case err := <-runErr:
		if err == nil {
			err = ctx.Err()
		}
		return counts{}, fmt.Errorf("consumer stopped after %d of %d records: %w", count.read.Load(), want, err)
	}
	return counts{read: int(count.read.Load()), processed: int(count.processed.Load())}, nil
}

// counter is a consumer.Observer that counts the records read and those
// processed (not skipped as seen before), and closes done once want records
// are settled. Safe for concurrent use.
type counter struct {
	want            int64
	read, processed atomic.Int64
	done            chan struct{}
	once            sync.Once
}

func (c *counter) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}

func (c *counter) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (c *counter) DeliveryDone(_ context.Context, _ *consumer.Message, d consumer.Delivery) {
	switch d.Result {
	case consumer.Processed:
		c.processed.Add(1)
	case consumer.Duplicate:
	default:
		return // dead-lettered or handed back
	}
	if c.read.Add(1) >= c.want {
		c.once.Do(func() { close(c.done) })
	}
}
