package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// workerCommand is the hidden sub-command that runs a worker process: the
// coordinator starts the program again with it, so that killing a consumer
// or a relay with SIGKILL kills a real process.
const workerCommand = "worker"

// Partitions of the run's topics (the in-process broker's default).
const partitions = 3

// The roles a worker process plays.
const (
	roleMessages = "messages" // consumes the message scenario's queue and topic
	roleBilling  = "billing"  // order.placed from RabbitMQ → charge + payment.captured into the outbox
	roleReceipts = "receipts" // payment.captured from Kafka → receipt
	roleRelay    = "relay"    // the outbox relay
	roleForward  = "forward"  // scale: RabbitMQ quorum queue → Redis Cluster dedupe → Kafka
	roleApply    = "apply"    // scale: Kafka group → PostgreSQL inbox → effect
)

// tables names the PostgreSQL tables of one scenario of the run.
type tables struct{ prefix string }

// effects has one row per applied effect of the message scenario and, on
// purpose, no unique key: a message applied twice is two rows.
func (t tables) effects() string { return t.prefix + "_effects" }

// faults has one row per injected handler failure and per message dropped
// on purpose, written outside the handler's transaction so that it survives
// the rollback.
func (t tables) faults() string { return t.prefix + "_faults" }

// dedupe is the pgstore table (the inbox).
func (t tables) dedupe() string { return t.prefix + "_dedupe" }

// orders, charges and receipts are the outbox scenario's business tables;
// charges and receipts have no unique key, on purpose.
func (t tables) orders() string   { return t.prefix + "_orders" }
func (t tables) charges() string  { return t.prefix + "_charges" }
func (t tables) receipts() string { return t.prefix + "_receipts" }

// outbox is the pgoutbox table.
func (t tables) outbox() string { return t.prefix + "_outbox" }

// forwarded has one row per delivery the scale scenario's forwarders
// settled as processed or duplicate; generations one per consumer-group
// generation an applier joined.
func (t tables) forwarded() string   { return t.prefix + "_forwarded" }
func (t tables) generations() string { return t.prefix + "_generations" }

// redisPrefix is the prefix of the scale scenario's Redis keys.
func (t tables) redisPrefix() string { return "chaos:" + t.prefix + ":" }

// workerConfig is everything a worker process needs; the coordinator passes
// it on the command line (and the URLs in the environment).
type workerConfig struct {
	role                  string
	amqp, postgres, kafka string // kafka: broker addresses, comma-separated
	failover              string // more AMQP URLs (other cluster nodes), comma-separated
	redis                 string // Redis Cluster addresses, comma-separated (forward role)
	queue, topic, group   string
	tables                tables
	scope                 string
	chances               chances
	lease, timeout        time.Duration
	partitions            int // of the topic; 0: partitions
	gen                   int // 1, 2, ... for worker processes; 0 in the coordinator
	rabbit, kafkaOn       bool
	noDedupe, verbose     bool
	cpuProfile            string // directory for a CPU profile; "": none
}

// The service URLs, which may hold passwords, go to the worker in its
// environment: a command line is visible to every local user (ps).
const (
	workerAMQPEnv     = "CHAOS_WORKER_AMQP_URL"
	workerFailoverEnv = "CHAOS_WORKER_AMQP_FAILOVER_URLS"
	workerPostgresEnv = "CHAOS_WORKER_POSTGRES_URL"
)

func (c workerConfig) env() []string {
	return []string{workerAMQPEnv + "=" + c.amqp, workerFailoverEnv + "=" + c.failover, workerPostgresEnv + "=" + c.postgres}
}

func (c workerConfig) args() []string {
	return []string{
		"-role", c.role, "-kafka", c.kafka, "-redis", c.redis,
		"-queue", c.queue, "-topic", c.topic, "-group", c.group,
		"-tables", c.tables.prefix, "-scope", c.scope,
		"-seed", strconv.FormatUint(c.chances.seed, 10),
		"-fail", strconv.FormatFloat(c.chances.failRate, 'g', -1, 64),
		"-drop-share", strconv.FormatFloat(c.chances.dropShare, 'g', -1, 64),
		"-lease", c.lease.String(), "-handler-timeout", c.timeout.String(),
		"-partitions", strconv.Itoa(c.partitions), "-gen", strconv.Itoa(c.gen),
		"-rabbitmq=" + strconv.FormatBool(c.rabbit), "-kafka-on=" + strconv.FormatBool(c.kafkaOn),
		"-no-dedupe=" + strconv.FormatBool(c.noDedupe), "-v=" + strconv.FormatBool(c.verbose),
		"-cpuprofile", c.cpuProfile,
	}
}

func parseWorker(args []string) (workerConfig, error) {
	var c workerConfig
	fs := flag.NewFlagSet(workerCommand, flag.ContinueOnError)
	c.amqp, c.failover, c.postgres = os.Getenv(workerAMQPEnv), os.Getenv(workerFailoverEnv), os.Getenv(workerPostgresEnv)
	fs.StringVar(&c.role, "role", roleMessages, "messages, billing, receipts, relay, forward or apply")
	fs.StringVar(&c.kafka, "kafka", "", "Kafka broker addresses, comma-separated")
	fs.StringVar(&c.redis, "redis", "", "Redis Cluster addresses, comma-separated")
	fs.StringVar(&c.queue, "queue", "", "queue")
	fs.StringVar(&c.topic, "topic", "", "topic")
	fs.StringVar(&c.group, "group", "", "consumer group")
	fs.StringVar(&c.tables.prefix, "tables", "", "table prefix")
	fs.StringVar(&c.scope, "scope", "", "dedupe scope")
	fs.Uint64Var(&c.chances.seed, "seed", 1, "seed")
	fs.Float64Var(&c.chances.failRate, "fail", 0.2, "failure rate")
	fs.Float64Var(&c.chances.dropShare, "drop-share", 0, "share of messages acknowledged without their effect")
	fs.DurationVar(&c.lease, "lease", 4*time.Second, "dedupe lease")
	fs.DurationVar(&c.timeout, "handler-timeout", 2*time.Second, "handler timeout")
	fs.IntVar(&c.partitions, "partitions", 0, "partitions of the topic (0: the default)")
	fs.IntVar(&c.gen, "gen", 1, "worker number")
	fs.BoolVar(&c.rabbit, "rabbitmq", true, "consume RabbitMQ")
	fs.BoolVar(&c.kafkaOn, "kafka-on", true, "consume Kafka")
	fs.BoolVar(&c.noDedupe, "no-dedupe", false, "no dedupe")
	fs.BoolVar(&c.verbose, "v", false, "log warnings")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile into this directory")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	missing := c.postgres == "" || c.tables.prefix == ""
	switch c.role {
	case roleMessages, roleBilling, roleReceipts:
		missing = missing || c.scope == "" || (c.rabbit && (c.amqp == "" || c.queue == "")) ||
			(c.kafkaOn && (c.kafka == "" || c.topic == "" || c.group == ""))
	case roleRelay:
		missing = missing || c.amqp == "" || c.queue == "" || c.kafka == "" || c.topic == ""
	case roleForward:
		missing = missing || c.scope == "" || c.amqp == "" || c.queue == "" || c.kafka == "" || c.topic == "" ||
			(c.redis == "" && !c.noDedupe)
	case roleApply:
		missing = missing || c.scope == "" || c.kafka == "" || c.topic == "" || c.group == ""
	default:
		return c, fmt.Errorf("chaos worker: unknown role %q", c.role)
	}
	if missing {
		return c, errors.New("chaos worker: missing arguments")
	}
	return c, nil
}

// runWorker plays its role until SIGTERM, or until its standard input
// closes (the coordinator is gone).
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
	if cfg.cpuProfile != "" {
		stopProfile, err := startCPUProfile(cfg)
		if err != nil {
			logger.Error("chaos worker: CPU profile", "error", err)
			return 2
		}
		defer stopProfile()
	}
	conns := int32(24)
	switch cfg.role {
	case roleRelay:
		conns = 8
	case roleForward:
		conns = 4 // the deliveries' records and the handler failures
	case roleApply:
		conns = 10 // a transaction per partition
	}
	pool, err := newPool(ctx, cfg.postgres, conns)
	if err != nil {
		logger.Error("chaos worker", "error", err)
		return 2
	}
	defer pool.Close()
	if cfg.role == roleRelay {
		if err := runRelay(ctx, pool, cfg, logger); err != nil {
			logger.Error("chaos relay", "error", err)
			return 2
		}
		return 0
	}
	r, err := newRole(pool, cfg, logger)
	if err != nil {
		logger.Error("chaos worker", "error", err)
		return 2
	}
	defer r.close()

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
			c, err := rabbitsub.New(cfg.amqp, cfg.queue, r.h,
				slices.Concat(r.opts, []consumer.Option{rabbitsub.WithWorkers(8), rabbitsub.WithPrefetch(64)}, r.rabbit)...)
			if err != nil {
				return err
			}
			return c.Run(ctx)
		})
	}
	if cfg.kafkaOn {
		loop("kafka", func() error {
			c, err := newKafkaConsumer(cfg, r.h, r.opts, r.kafkaLog)
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
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", cfg.gen, "role", cfg.role)
}

// startCPUProfile writes the worker's CPU profile to DIR/ROLE-GEN.pprof
// until the returned function is called (a killed worker leaves none).
func startCPUProfile(cfg workerConfig) (stop func(), err error) {
	f, err := os.Create(filepath.Join(cfg.cpuProfile, fmt.Sprintf("%s-%d.pprof", cfg.role, cfg.gen)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func newKafkaConsumer(cfg workerConfig, h consumer.Handler, opts []consumer.Option, log kafkago.Logger) (*kafkasub.Consumer, error) {
	parts := cfg.partitions
	if parts == 0 {
		parts = partitions
	}
	// Short sessions, so that the group notices a killed member within
	// seconds.
	return kafkasub.New(strings.Split(cfg.kafka, ","), cfg.topic, cfg.group, h, slices.Concat(opts, []consumer.Option{
		kafkasub.WithSessionTimeout(3 * time.Second),
		kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) {
			rc.MaxWait = 100 * time.Millisecond
			rc.HeartbeatInterval = 300 * time.Millisecond
			rc.RebalanceTimeout = 3 * time.Second
			rc.JoinGroupBackoff = 200 * time.Millisecond
			rc.ReadBackoffMax = 100 * time.Millisecond
			rc.MaxAttempts = 1000
			if log != nil {
				rc.Logger = log
			}
		}),
		kafkasub.WithPartitionParallelism(parts)})...)
}

// role is what a consuming worker runs: its handler, the consumer options
// of its transports and what to close when it ends.
type role struct {
	h        consumer.Handler
	opts     []consumer.Option // for every transport
	rabbit   []consumer.Option // RabbitMQ only
	kafkaLog kafkago.Logger    // the consumer group's logger; nil: none
	closers  []func()
}

// close closes what the role opened, in reverse order.
func (r *role) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// newRole returns the handler of a consuming role and the consumer options
// its transports take: the dedupe store (the pgstore inbox, so a handler's
// writes, the messages it enqueues and the completion commit together; the
// forward role's Redis Cluster store), a timeout below the lease, and many
// quick retries, since every fault is transient.
func newRole(pool *pgxpool.Pool, cfg workerConfig, logger *slog.Logger) (*role, error) {
	r := &role{opts: []consumer.Option{
		consumer.WithTimeout(cfg.timeout), consumer.WithMaxAttempts(1000),
		consumer.WithBackoff(2*time.Millisecond, 100*time.Millisecond),
		consumer.WithShutdownTimeout(10 * time.Second), consumer.WithLogger(logger),
	}}
	fail := func(err error) (*role, error) {
		r.close()
		return nil, err
	}
	if !cfg.noDedupe {
		if cfg.role == roleForward {
			redis.SetLogger(redisLog{logger})
			store, closeStore, err := newRedisStore(cfg)
			if err != nil {
				return fail(err)
			}
			r.closers = append(r.closers, closeStore)
			r.opts = append(r.opts, consumer.WithDedupe(store, cfg.scope), consumer.WithLease(cfg.lease), consumer.WithRetention(scaleRetention))
		} else {
			store, err := pgstore.New(pool, pgstore.WithTable(cfg.tables.dedupe()))
			if err != nil {
				return fail(fmt.Errorf("chaos: dedupe store: %w", err))
			}
			r.closers = append(r.closers, func() { _ = store.Close() })
			r.opts = append(r.opts, consumer.WithDedupe(store, cfg.scope), consumer.WithLease(cfg.lease), consumer.WithRetention(dedupe.Forever))
		}
	}
	f := &faulty{pool: pool, table: cfg.tables.faults(), chances: cfg.chances, worker: cfg.gen, role: cfg.role}
	switch cfg.role {
	case roleMessages:
		r.h = &effectHandler{faulty: f, effects: cfg.tables.effects()}
	case roleBilling:
		b, closeB, err := newBilling(f, cfg)
		if err != nil {
			return fail(err)
		}
		r.closers = append(r.closers, closeB)
		r.h = b
	case roleReceipts:
		r.h = &receiptHandler{faulty: f, receipts: cfg.tables.receipts()}
	case roleForward:
		h, err := newForwarder(f, cfg)
		if err != nil {
			return fail(err)
		}
		r.closers = append(r.closers, h.close)
		r.h = h
		rec := newDeliveryRecorder(pool, cfg.tables.forwarded(), cfg.gen, logger)
		r.closers = append(r.closers, rec.close)
		r.opts = append(r.opts, consumer.WithObserver(rec))
		r.rabbit = append(r.rabbit, rabbitsub.WithTopology(scaleTopology(cfg.queue)))
		if cfg.failover != "" {
			r.rabbit = append(r.rabbit, rabbitsub.WithFailoverURLs(strings.Split(cfg.failover, ",")...))
		}
	case roleApply:
		r.h = &applyHandler{faulty: f, effects: cfg.tables.effects()}
		r.kafkaLog = &generationLog{pool: pool, table: cfg.tables.generations(), worker: cfg.gen}
	default:
		return fail(fmt.Errorf("chaos: role %q consumes nothing", cfg.role))
	}
	return r, nil
}
