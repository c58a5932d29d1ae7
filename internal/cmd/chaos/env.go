package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

// env is what the scenarios of one run share: the run's ID, the PostgreSQL
// pool, the run's own RabbitMQ user (whose connections, and only those, a
// connection kill closes), the in-process Kafka broker the faults stop and
// start, and the faults that act on them. Scenarios add their own queues,
// topics, tables and worker processes. Its methods are safe for concurrent
// use.
type env struct {
	opt         options
	out, errOut io.Writer
	outMu       sync.Mutex
	start       time.Time
	run         string
	exe         string

	pool *pgxpool.Pool

	admin      *amqp.Connection // nil without RabbitMQ
	rabbitUser *testenv.RabbitUser
	userURL    string

	kafka     *kafkatest.Broker // nil without Kafka
	kafkaAddr string
	kmu       sync.Mutex // one restart at a time

	gen atomic.Int64 // worker process numbers, unique in the run

	cleanups []func()
}

func (e *env) logf(format string, args ...any) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.out, "[%6.1fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

// printf writes a result line.
func (e *env) printf(format string, args ...any) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.out, format, args...)
}

func (e *env) warnf(format string, args ...any) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.errOut, "chaos: "+format+"\n", args...)
}

func (e *env) onCleanup(f func()) { e.cleanups = append(e.cleanups, f) }

// cleanup undoes the setups in reverse order.
func (e *env) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// setup connects to PostgreSQL and, as the scenarios need them, sets up
// RabbitMQ (the run's user) and starts the in-process Kafka broker.
func (e *env) setup(ctx context.Context, rabbit, kafka bool) error {
	var err error
	if e.exe, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if e.pool, err = newPool(ctx, e.opt.postgres, 32); err != nil {
		return err
	}
	e.onCleanup(e.pool.Close)
	if err := e.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if rabbit {
		if err := e.setupRabbit(ctx); err != nil {
			return err
		}
	}
	if kafka {
		if err := e.setupKafka(); err != nil {
			return err
		}
	}
	return nil
}

// setupRabbit connects the coordinator (as the admin user, which no fault
// touches) and adds the run's broker user.
func (e *env) setupRabbit(ctx context.Context) error {
	var err error
	if e.admin, err = amqp.Dial(e.opt.amqp); err != nil {
		return fmt.Errorf("rabbitmq: %s: %w", testenv.RedactURL(e.opt.amqp), err)
	}
	e.onCleanup(func() { _ = e.admin.Close() })
	// A random password, given to rabbitmqctl on stdin (never on a command line).
	user, err := testenv.AddRabbitUser(ctx, []string{e.opt.ctl}, e.opt.amqp, "chaos-"+e.run)
	if err != nil {
		return err
	}
	e.onCleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := user.Delete(ctx); err != nil {
			e.warnf("%v", err)
		}
	})
	e.rabbitUser, e.userURL = user, user.URL
	return nil
}

// declareQueue declares a durable queue of the run and deletes it (and its
// dead-letter queue) at cleanup.
func (e *env) declareQueue(name string) error {
	ch, err := e.admin.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: channel: %w", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitmq: declare %s: %w", name, err)
	}
	e.onCleanup(func() {
		if ch, err := e.admin.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
			_, _ = ch.QueueDelete(name+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	return nil
}

// queueLength is the number of messages ready in a queue (all of them when
// no consumer is connected).
func (e *env) queueLength(queue string) (int64, error) {
	ch, err := e.admin.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return int64(q.Messages), err
}

// setupKafka starts the in-process broker on a fixed port with a data
// directory, so that it can be stopped and started again with its records
// and committed offsets.
func (e *env) setupKafka() error {
	dir, err := os.MkdirTemp("", "chaos-kafka-")
	if err != nil {
		return fmt.Errorf("kafka data dir: %w", err)
	}
	e.onCleanup(func() { _ = os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("kafka port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	e.kafka, err = kafkatest.New(kafkatest.WithDataDir(dir), kafkatest.WithPorts(port), kafkatest.WithPartitions(partitions),
		// The consumers use 3 s sessions, so a killed member leaves the
		// group quickly; the broker's default minimum is 6 s.
		kafkatest.WithMinSessionTimeout(time.Second))
	if err != nil {
		return err
	}
	e.onCleanup(e.kafka.Close)
	e.kafkaAddr = e.kafka.Brokers()[0]
	return nil
}

// createTopic creates a topic of the run with the usual partitions.
func (e *env) createTopic(ctx context.Context, topic string) error {
	return e.kafka.CreateTopic(ctx, topic, partitions)
}

// killConnections makes the broker close every connection of the run's
// user: the publishers', the relays' and the consumer processes'.
func (e *env) killConnections(ctx context.Context) error {
	return e.rabbitUser.CloseConnections(ctx, "chaos: connection kill")
}

// restartKafka stops the in-process broker (it saves its data), leaves it
// down for a moment, and starts it again on the same port and data.
func (e *env) restartKafka(ctx context.Context) error {
	e.kmu.Lock()
	defer e.kmu.Unlock()
	e.kafka.Close()
	e.logf("fault: Kafka broker stopped")
	sleep(ctx, 700*time.Millisecond)
	if err := e.kafka.Restart(); err != nil {
		return err
	}
	e.logf("fault: Kafka broker started again on %s with its data", e.kafkaAddr)
	return nil
}

// restartPostgres runs the -restart-postgres command, which restarts the
// PostgreSQL server every process of the run uses.
func (e *env) restartPostgres(ctx context.Context) error {
	e.logf("fault: restarting PostgreSQL")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	began := time.Now()
	out, err := exec.CommandContext(ctx, "sh", "-c", e.opt.restartPostgres).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restart postgres (%s): %w: %s", e.opt.restartPostgres, err, strings.TrimSpace(string(out)))
	}
	e.logf("fault: PostgreSQL restarted in %v", time.Since(began).Round(time.Millisecond))
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func newPool(ctx context.Context, url string, conns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("chaos: postgres URL: %w", err)
	}
	pc.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("chaos: connect to postgres: %w", err)
	}
	return pool, nil
}

// migrateInbox creates a scenario's pgstore table.
func (e *env) migrateInbox(ctx context.Context, t tables) error {
	store, err := pgstore.New(e.pool, pgstore.WithTable(t.dedupe()))
	if err != nil {
		return fmt.Errorf("dedupe table: %w", err)
	}
	err = store.Migrate(ctx)
	_ = store.Close()
	if err != nil {
		return fmt.Errorf("dedupe table: %w", err)
	}
	return nil
}

// createTables runs ddl and drops the tables named at cleanup, unless -keep.
func (e *env) createTables(ctx context.Context, ddl string, names ...string) error {
	e.onCleanup(func() {
		if e.opt.keep {
			e.warnf("kept tables %s", strings.Join(names, ", "))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := e.pool.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", ")); err != nil {
			e.warnf("drop tables: %v", err)
		}
	})
	if _, err := e.pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	return nil
}
