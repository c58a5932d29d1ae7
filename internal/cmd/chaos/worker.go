package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// workerCommand is the hidden sub-command that runs the consumer: the
// coordinator starts the program again with it, so that killing the consumer
// with SIGKILL kills a real process.
const workerCommand = "worker"

// Partitions of the run's topic (the in-process broker's default).
const partitions = 3

// tables names the run's PostgreSQL tables.
type tables struct{ prefix string }

// effects has one row per applied effect and, on purpose, no unique key:
// a message applied twice is two rows.
func (t tables) effects() string { return t.prefix + "_effects" }

// faults has one row per injected handler failure, written outside the
// handler's transaction so that it survives the rollback.
func (t tables) faults() string { return t.prefix + "_faults" }

// dedupe is the pgstore table.
func (t tables) dedupe() string { return t.prefix + "_dedupe" }

// workerConfig is everything a consumer worker needs; the coordinator passes
// it on the command line.
type workerConfig struct {
	amqp, postgres, kafka string // kafka: one broker address
	queue, topic, group   string
	tables                tables
	scope                 string
	seed                  uint64
	failRate              float64
	lease, timeout        time.Duration
	gen                   int // 1, 2, ... for workers; 0 for the replay
	rabbit, kafkaOn       bool
	noDedupe, verbose     bool
}

// The service URLs, which may hold passwords, go to the worker in its
// environment: a command line is visible to every local user (ps).
const (
	workerAMQPEnv     = "CHAOS_WORKER_AMQP_URL"
	workerPostgresEnv = "CHAOS_WORKER_POSTGRES_URL"
)

func (c workerConfig) env() []string {
	return []string{workerAMQPEnv + "=" + c.amqp, workerPostgresEnv + "=" + c.postgres}
}

func (c workerConfig) args() []string {
	return []string{
		"-kafka", c.kafka,
		"-queue", c.queue, "-topic", c.topic, "-group", c.group,
		"-tables", c.tables.prefix, "-scope", c.scope,
		"-seed", strconv.FormatUint(c.seed, 10), "-fail", strconv.FormatFloat(c.failRate, 'g', -1, 64),
		"-lease", c.lease.String(), "-handler-timeout", c.timeout.String(), "-gen", strconv.Itoa(c.gen),
		"-rabbitmq=" + strconv.FormatBool(c.rabbit), "-kafka-on=" + strconv.FormatBool(c.kafkaOn),
		"-no-dedupe=" + strconv.FormatBool(c.noDedupe), "-v=" + strconv.FormatBool(c.verbose),
	}
}

func parseWorker(args []string) (workerConfig, error) {
	var c workerConfig
	fs := flag.NewFlagSet(workerCommand, flag.ContinueOnError)
	c.amqp, c.postgres = os.Getenv(workerAMQPEnv), os.Getenv(workerPostgresEnv)
	fs.StringVar(&c.kafka, "kafka", "", "Kafka broker address")
	fs.StringVar(&c.queue, "queue", "", "queue")
	fs.StringVar(&c.topic, "topic", "", "topic")
	fs.StringVar(&c.group, "group", "", "consumer group")
	fs.StringVar(&c.tables.prefix, "tables", "", "table prefix")
	fs.StringVar(&c.scope, "scope", "", "dedupe scope")
	fs.Uint64Var(&c.seed, "seed", 1, "seed")
	fs.Float64Var(&c.failRate, "fail", 0.2, "failure rate")
	fs.DurationVar(&c.lease, "lease", 4*time.Second, "dedupe lease")
	fs.DurationVar(&c.timeout, "handler-timeout", 2*time.Second, "handler timeout")
	fs.IntVar(&c.gen, "gen", 1, "worker generation")
	fs.BoolVar(&c.rabbit, "rabbitmq", true, "consume RabbitMQ")
	fs.BoolVar(&c.kafkaOn, "kafka-on", true, "consume Kafka")
	fs.BoolVar(&c.noDedupe, "no-dedupe", false, "no dedupe")
	fs.BoolVar(&c.verbose, "v", false, "log warnings")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.postgres == "" || c.tables.prefix == "" || c.scope == "" || (c.rabbit && c.queue == "") || (c.kafkaOn && (c.kafka == "" || c.topic == "" || c.group == "")) {
		return c, errors.New("chaos worker: missing arguments")
	}
	return c, nil
}

// runWorker consumes the run's queue and topic until SIGTERM, or until its
// standard input closes (the coordinator is gone).
func runWorker(args []string) int {
	cfg, err := parseWorker(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	logger := newLogger(cfg)
	pool, err := newPool(ctx, cfg.postgres)
	if err != nil {
		logger.Error("chaos worker", "error", err)
		return 2
	}
	defer pool.Close()
	h, closeHandler, err := newHandler(ctx, pool, cfg)
	if err != nil {
		logger.Error("chaos worker", "error", err)
		return 2
	}
	defer closeHandler()

	var wg sync.WaitGroup
	loop := func(name string, run func() error) {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := run(); err != nil && ctx.Err() == nil {
					logger.Error("chaos worker: consumer stopped, starting it again", "consumer", name, "error", err)
					select {
					case <-ctx.Done():
					case <-time.After(500 * time.Millisecond):
					}
				}
			}
		})
	}
	if cfg.rabbit {
		loop("rabbitmq", func() error {
			c, err := rabbitsub.New(cfg.amqp, cfg.queue, h,
				rabbitsub.WithWorkers(8), rabbitsub.WithPrefetch(64), consumer.WithMaxAttempts(1000),
				consumer.WithBackoff(2*time.Millisecond, 100*time.Millisecond),
				consumer.WithShutdownTimeout(10*time.Second), consumer.WithLogger(logger))
			if err != nil {
				return err
			}
			return c.Run(ctx)
		})
	}
	if cfg.kafkaOn {
		loop("kafka", func() error {
			c, err := newKafkaConsumer(cfg, h, logger)
			if err != nil {
				return err
			}
			return c.Run(ctx)
		})
	}
	wg.Wait()
	return 0
}

func newLogger(cfg workerConfig) *slog.Logger {
	level := slog.LevelError
	if cfg.verbose {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", cfg.gen)
}

func newPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("chaos: postgres URL: %w", err)
	}
	// Each handler holds a transaction and may record a fault on a second
	// connection: keep more connections than handlers run at once.
	pc.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("chaos: connect to postgres: %w", err)
	}
	return pool, nil
}

func newKafkaConsumer(cfg workerConfig, h consumer.Handler, logger *slog.Logger) (*kafkasub.Consumer, error) {
	// Short sessions, so that the group notices a killed member within
	// seconds.
	return kafkasub.New([]string{cfg.kafka}, cfg.topic, cfg.group, h,
		kafkasub.WithSessionTimeout(3*time.Second),
		kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) {
			rc.MaxWait = 100 * time.Millisecond
			rc.HeartbeatInterval = 300 * time.Millisecond
			rc.RebalanceTimeout = 3 * time.Second
			rc.JoinGroupBackoff = 200 * time.Millisecond
			rc.ReadBackoffMax = 100 * time.Millisecond
			rc.MaxAttempts = 1000
		}),
		kafkasub.WithPartitionParallelism(partitions), consumer.WithMaxAttempts(1000),
		consumer.WithBackoff(2*time.Millisecond, 100*time.Millisecond),
		consumer.WithShutdownTimeout(10*time.Second), consumer.WithLogger(logger))
}

// newHandler returns the consumer's chain: the pgstore inbox (so the row and
// the completion commit together), a timeout below the lease, and Recover
// innermost so an injected panic rolls back like an error.
func newHandler(ctx context.Context, pool *pgxpool.Pool, cfg workerConfig) (consumer.Handler, func(), error) {
	inner := &effectHandler{pool: pool, tables: cfg.tables, seed: cfg.seed, failRate: cfg.failRate, worker: cfg.gen}
	if cfg.noDedupe {
		return consumer.Chain(consumer.Timeout(cfg.timeout), consumer.Recover())(inner), func() {}, nil
	}
	store, err := pgstore.New(pool, pgstore.WithTable(cfg.tables.dedupe()))
	if err != nil {
		return nil, nil, fmt.Errorf("chaos: dedupe store: %w", err)
	}
	dd := consumer.Dedupe(store, cfg.scope, consumer.WithLease(cfg.lease), consumer.WithRetention(dedupe.Forever))
	return consumer.Chain(dd, consumer.Timeout(cfg.timeout), consumer.Recover())(inner), func() { _ = store.Close() }, nil
}

// errInjected is the transient failure the handler returns on purpose.
var errInjected = errors.New("chaos: injected transient failure")

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// effectHandler applies a message's effect: one row in the effects table,
// written in the inbox's transaction. Then, for a seeded fraction of the
// attempts, it fails (or panics) after the row was written, so the row must
// be rolled back.
type effectHandler struct {
	pool     *pgxpool.Pool
	tables   tables
	seed     uint64
	failRate float64
	worker   int
}

func (e *effectHandler) Handle(ctx context.Context, m *consumer.Message) error {
	var db execer = e.pool // without dedupe (-no-dedupe): autocommit
	if tx, ok := pgstore.TxFromContext(ctx); ok {
		db = tx
	}
	if _, err := db.Exec(ctx, "INSERT INTO "+e.tables.effects()+" (message_id, source, worker, attempt) VALUES ($1, $2, $3, $4)",
		m.ID, m.Source, e.worker, m.Attempt); err != nil {
		return fmt.Errorf("chaos: write effect of %s: %w", m.ID, err)
	}
	fail, panics := e.failure(m)
	if !fail {
		return nil
	}
	kind := "error"
	if panics {
		kind = "panic"
	}
	// Recorded outside the transaction, which is about to roll back.
	_, _ = e.pool.Exec(context.WithoutCancel(ctx), "INSERT INTO "+e.tables.faults()+" (kind, message_id, worker) VALUES ($1, $2, $3)",
		kind, m.ID, e.worker)
	if panics {
		panic(fmt.Sprintf("chaos: injected panic handling %s", m.ID))
	}
	return fmt.Errorf("handling %s, attempt %d: %w", m.ID, m.Attempt, errInjected)
}

// failure decides, from the seed, the message ID and the attempt, whether
// this attempt fails and whether it panics (a quarter of the failures).
func (e *effectHandler) failure(m *consumer.Message) (fail, panics bool) {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e.seed)
	h.Write(b[:])
	h.Write(m.ID[:])
	binary.BigEndian.PutUint64(b[:], uint64(m.Attempt))
	h.Write(b[:])
	sum := mix(h.Sum64())
	u := float64(sum>>11) / (1 << 53)
	return u < e.failRate, sum&3 == 0
}

// mix is SplitMix64's finaliser: FNV's low bits are poorly distributed.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}
