package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// namespace of the run's message IDs.
const namespace = "chaos.uuidforge.example"

// planned is one distinct message and the transport it goes through.
type planned struct {
	msg    publisher.Message
	id     uuid.UUID
	rabbit bool
}

// fault is one planned fault, injected when the run has got as far as at:
// a fraction of the copies published (publish faults) or of the messages
// applied (consume faults).
type fault struct {
	name  string
	at    float64
	do    func(context.Context) error
	tried atomic.Bool
	ok    atomic.Bool
}

// chaos is the coordinator's state. Its methods are safe for concurrent use
// where they run from several goroutines (faults, progress, publishers).
type chaos struct {
	opt         options
	out, errOut io.Writer
	outMu       sync.Mutex
	start       time.Time
	run         string

	exe                       string
	queue, topic, group, user string
	userURL                   string
	rabbitUser                *testenv.RabbitUser
	tables                    tables
	scope                     string

	pool  *pgxpool.Pool
	admin *amqp.Connection

	kmu       sync.Mutex
	kafka     *testenv.Kafka
	kafkaDir  string
	kafkaAddr string
	kafkaPort int

	wmu    sync.Mutex
	worker *workerProc
	gen    int

	msgs   []planned
	copies []int32 // indexes into msgs, in publishing order

	claimed   atomic.Int64 // copies handed to publishers
	published atomic.Int64 // copies confirmed by the brokers
	pubFired  atomic.Int64 // publish faults done (gates the publishers)

	connKills, sigkills, kafkaRestarts atomic.Int64
	pubFaults, consFaults              []*fault
	replayed, replayNew                int64 // set by replay

	pmu      sync.Mutex
	problems []string // consumer processes that failed

	cleanups []func()
}

func (c *chaos) logf(format string, args ...any) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	fmt.Fprintf(c.out, "[%6.1fs] %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

func (c *chaos) onCleanup(f func()) { c.cleanups = append(c.cleanups, f) }

// cleanup undoes setup in reverse order.
func (c *chaos) cleanup() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
	c.cleanups = nil
}

func (c *chaos) setup(ctx context.Context) error {
	var err error
	if c.exe, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	base := "chaos_" + c.run
	c.queue, c.topic, c.group, c.user = "chaos."+c.run+".queue", "chaos."+c.run+".topic", "chaos-"+c.run, "chaos-"+c.run
	c.tables, c.scope = tables{prefix: base}, "chaos"

	// PostgreSQL: the effects table (no unique key, on purpose), the faults
	// table and the dedupe store's table.
	if c.pool, err = newPool(ctx, c.opt.postgres); err != nil {
		return err
	}
	c.onCleanup(c.pool.Close)
	if err := c.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
		row_id     bigserial   PRIMARY KEY,
		message_id uuid        NOT NULL,
		source     text        NOT NULL,
		worker     int         NOT NULL,
		attempt    int         NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT clock_timestamp());
	CREATE INDEX ON %[1]s (message_id);
	CREATE TABLE %[2]s (
		kind       text        NOT NULL,
		message_id uuid        NOT NULL,
		worker     int         NOT NULL,
		at         timestamptz NOT NULL DEFAULT clock_timestamp())`, c.tables.effects(), c.tables.faults())
	if _, err := c.pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	c.onCleanup(func() {
		if c.opt.keep {
			fmt.Fprintf(c.errOut, "chaos: kept tables %s, %s and %s\n", c.tables.effects(), c.tables.faults(), c.tables.dedupe())
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := c.pool.Exec(ctx, "DROP TABLE IF EXISTS "+c.tables.effects()+", "+c.tables.faults()+", "+c.tables.dedupe()); err != nil {
			fmt.Fprintln(c.errOut, "chaos: drop tables:", err)
		}
	})
	store, err := pgstore.New(c.pool, pgstore.WithTable(c.tables.dedupe()))
	if err != nil {
		return fmt.Errorf("dedupe table: %w", err)
	}
	err = store.Migrate(ctx)
	_ = store.Close()
	if err != nil {
		return fmt.Errorf("dedupe table: %w", err)
	}

	if c.opt.rabbit() {
		if err := c.setupRabbit(ctx); err != nil {
			return err
		}
	}
	if c.opt.kafka() {
		if err := c.setupKafka(ctx); err != nil {
			return err
		}
	}
	return c.plan(ctx)
}

// setupRabbit declares the run's queue and adds the run's broker user, whose
// connections (and only those) the connection-kill fault closes.
func (c *chaos) setupRabbit(ctx context.Context) error {
	var err error
	if c.admin, err = amqp.Dial(c.opt.amqp); err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	c.onCleanup(func() { _ = c.admin.Close() })
	ch, err := c.admin.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: channel: %w", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(c.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitmq: declare %s: %w", c.queue, err)
	}
	c.onCleanup(func() {
		if ch, err := c.admin.Channel(); err == nil {
			_, _ = ch.QueueDelete(c.queue, false, false, false)
			_, _ = ch.QueueDelete(c.queue+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	// A random password, given to rabbitmqctl on stdin (never on a command line).
	user, err := testenv.AddRabbitUser(ctx, []string{c.opt.ctl}, c.opt.amqp, c.user)
	if err != nil {
		return err
	}
	c.onCleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := user.Delete(ctx); err != nil {
			fmt.Fprintln(c.errOut, "chaos:", err)
		}
	})
	c.rabbitUser, c.userURL = user, user.URL
	return nil
}

func (c *chaos) kafkaOptions() []testenv.KafkaOption {
	return []testenv.KafkaOption{
		testenv.KafkaDataDir(c.kafkaDir), testenv.KafkaPorts(c.kafkaPort),
		// The consumers use 3 s sessions, so a killed member leaves the
		// group quickly; the broker's default minimum is 6 s.
		kafkatest.WithMinSessionTimeout(time.Second),
	}
}

// setupKafka starts the in-process broker on a fixed port with a data
// directory, so that it can be stopped and started again with its records and
// committed offsets, and creates the run's topic.
func (c *chaos) setupKafka(ctx context.Context) error {
	if v := os.Getenv(testenv.EnvKafka); v != "" {
		// The broker restart needs the in-process broker.
		fmt.Fprintf(c.errOut, "chaos: ignoring %s=%s: the run stops and starts its own in-process broker\n", testenv.EnvKafka, v)
		if err := os.Unsetenv(testenv.EnvKafka); err != nil {
			return err
		}
	}
	var err error
	if c.kafkaDir, err = os.MkdirTemp("", "chaos-kafka-"); err != nil {
		return fmt.Errorf("kafka data dir: %w", err)
	}
	c.onCleanup(func() { _ = os.RemoveAll(c.kafkaDir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("kafka port: %w", err)
	}
	c.kafkaPort = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	if c.kafka, err = testenv.StartKafka(c.kafkaOptions()...); err != nil {
		return err
	}
	c.onCleanup(func() {
		c.kmu.Lock()
		defer c.kmu.Unlock()
		c.kafka.Close()
	})
	c.kafkaAddr = c.kafka.Brokers()[0]
	client := &kafkago.Client{Addr: kafkago.TCP(c.kafkaAddr), Timeout: 5 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: c.topic, NumPartitions: partitions, ReplicationFactor: 1},
	}})
	if err == nil {
		err = resp.Errors[c.topic]
	}
	if err != nil {
		return fmt.Errorf("kafka: create topic %s: %w", c.topic, err)
	}
	return nil
}

// plan makes the distinct messages, computes their IDs as the publisher
// will, and lays out the copies: two per message, three for a quarter of
// them, shuffled, all from the seed.
func (c *chaos) plan(ctx context.Context) error {
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(c.opt.seed, c.opt.seed^0x9e3779b97f4a7c15))
	c.msgs = make([]planned, c.opt.n)
	for i := range c.msgs {
		rabbit := c.opt.transports == "rabbitmq" || (c.opt.transports == "both" && i%2 == 0)
		via := "kafka"
		if rabbit {
			via = "rabbitmq"
		}
		m := publisher.Message{
			Type: "chaos.event", Key: []any{c.run, i},
			Body: fmt.Appendf(nil, `{"run":%q,"n":%d,"via":%q}`, c.run, i, via),
		}
		l, err := publisher.IDs(ctx, gen, &m)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		c.msgs[i] = planned{msg: m, id: l.MessageID, rabbit: rabbit}
		c.copies = append(c.copies, int32(i), int32(i))
		if rng.IntN(4) == 0 {
			c.copies = append(c.copies, int32(i))
		}
	}
	rng.Shuffle(len(c.copies), func(i, j int) { c.copies[i], c.copies[j] = c.copies[j], c.copies[i] })
	return nil
}

func (c *chaos) counts() (rabbit, kafka int) {
	for _, m := range c.msgs {
		if m.rabbit {
			rabbit++
		} else {
			kafka++
		}
	}
	return rabbit, kafka
}

// chaos runs the whole scenario and counts the result.
func (c *chaos) chaos(parent context.Context) (result, error) {
	ctx, cancel := context.WithTimeout(parent, c.opt.timeout)
	defer cancel()
	res := result{messages: int64(c.opt.n), extraCopies: int64(len(c.copies) - c.opt.n)}
	nr, nk := c.counts()
	c.logf("run %s: %d messages (%d via RabbitMQ queue %s, %d via Kafka topic %s), %d copies published in a seeded order (seed %d)",
		c.run, c.opt.n, nr, c.queue, nk, c.topic, len(c.copies), c.opt.seed)
	c.logf("effects go to PostgreSQL table %s (no unique key); handler attempts fail %.0f%% of the time",
		c.tables.effects(), 100*c.opt.failRate)

	err := c.scenario(ctx)
	countCtx := ctx
	if ctx.Err() != nil { // still count what happened
		var cancel context.CancelFunc
		countCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	c.stopWorker()
	res.connKills, res.sigkills, res.kafkaRestarts = c.connKills.Load(), c.sigkills.Load(), c.kafkaRestarts.Load()
	for _, f := range append(c.pubFaults, c.consFaults...) {
		if !f.ok.Load() {
			res.missedFaults = append(res.missedFaults, f.name)
		}
	}
	c.pmu.Lock()
	res.workerProblems = append(res.workerProblems, c.problems...)
	c.pmu.Unlock()
	if cerr := c.count(countCtx, &res); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return res, err
}

func (c *chaos) scenario(ctx context.Context) error {
	c.planFaults()
	if err := c.startWorker(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	wg.Go(func() { c.consumeFaults(bg) })
	wg.Go(func() { c.progress(bg) })

	if err := c.publish(ctx); err != nil {
		return err
	}
	c.logf("published all %d copies (%d confirmed by the brokers)", len(c.copies), c.published.Load())
	left, err := c.drain(ctx)
	if err != nil {
		return err
	}
	if left.queue != 0 || left.lag != 0 {
		return fmt.Errorf("consumers did not drain: %d messages in the queue, %d records not committed", left.queue, left.lag)
	}
	stopBG()
	wg.Wait()
	if c.opt.kafka() {
		return c.replay(ctx)
	}
	return nil
}

// planFaults lays out the faults: publish faults gate the publishers, so they
// land while copies are in flight; consume faults fire when enough messages
// were applied.
func (c *chaos) planFaults() {
	kill := c.killConnections
	if c.opt.rabbit() {
		c.pubFaults = append(c.pubFaults, &fault{name: "close RabbitMQ connections while publishing (1)", at: 0.15, do: kill})
	}
	if c.opt.kafka() {
		c.pubFaults = append(c.pubFaults, &fault{name: "restart the Kafka broker while publishing", at: 0.35, do: c.restartKafka})
	}
	if c.opt.rabbit() {
		c.pubFaults = append(c.pubFaults,
			&fault{name: "close RabbitMQ connections while publishing (2)", at: 0.55, do: kill},
			&fault{name: "close RabbitMQ connections while publishing (3)", at: 0.80, do: kill})
	}
	c.consFaults = append(c.consFaults, &fault{name: "SIGKILL the consumer process (1)", at: 0.25, do: c.killWorker})
	if c.opt.rabbit() {
		c.consFaults = append(c.consFaults, &fault{name: "close RabbitMQ connections while consuming", at: 0.45, do: kill})
	}
	c.consFaults = append(c.consFaults, &fault{name: "SIGKILL the consumer process (2)", at: 0.60, do: c.killWorker})
	if c.opt.kafka() {
		c.consFaults = append(c.consFaults, &fault{name: "restart the Kafka broker while consuming", at: 0.80, do: c.restartKafka})
	}
}

func (c *chaos) fire(ctx context.Context, f *fault) {
	f.tried.Store(true)
	if err := f.do(ctx); err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(c.errOut, "chaos: fault %q failed: %v\n", f.name, err)
		}
		return
	}
	f.ok.Store(true)
}

// publish sends every copy through its transport's publisher, from several
// goroutines, in chunks. A chunk past a publish fault's threshold waits until
// that fault was injected, while the chunks before it are still in flight.
func (c *chaos) publish(ctx context.Context) error {
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	var rp *rabbitpub.Publisher
	if c.opt.rabbit() {
		if rp, err = rabbitpub.New(c.userURL, gen, rabbitpub.WithConfirmTimeout(5*time.Second),
			rabbitpub.WithRoutingKey(func(*publisher.Message) string { return c.queue })); err != nil {
			return err
		}
		defer rp.Close()
	}
	var kp *kafkapub.Publisher
	if c.opt.kafka() {
		if kp, err = kafkapub.New([]string{c.kafkaAddr}, c.topic, gen, kafkapub.WithWriteTimeout(3*time.Second)); err != nil {
			return err
		}
		defer kp.Close()
	}

	const chunk, publishers = 50, 6
	total := int64(len(c.copies))
	thresholds := make([]int64, len(c.pubFaults))
	for k, f := range c.pubFaults {
		thresholds[k] = int64(math.Ceil(f.at * float64(total)))
	}
	pubCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var faultsWG sync.WaitGroup
	faultsWG.Go(func() {
		for k, f := range c.pubFaults {
			for c.claimed.Load() < thresholds[k] {
				if !sleep(pubCtx, 2*time.Millisecond) {
					return
				}
			}
			c.fire(pubCtx, f)
			c.pubFired.Store(int64(k + 1))
		}
	})
	defer faultsWG.Wait()

	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				end := c.claimed.Add(chunk)
				start := end - chunk
				if start >= total {
					return
				}
				end = min(end, total)
				var need int64
				for _, t := range thresholds {
					if t <= start {
						need++
					}
				}
				for c.pubFired.Load() < need {
					if !sleep(pubCtx, 2*time.Millisecond) {
						return
					}
				}
				var rm, km []publisher.Message
				for _, i := range c.copies[start:end] {
					if m := c.msgs[i]; m.rabbit {
						rm = append(rm, m.msg)
					} else {
						km = append(km, m.msg)
					}
				}
				if len(rm) > 0 {
					if err := rp.PublishBatch(pubCtx, rm...); err != nil {
						errs <- fmt.Errorf("publish to RabbitMQ: %w", err)
						cancel()
						return
					}
				}
				if len(km) > 0 {
					if err := kp.PublishBatch(pubCtx, km...); err != nil {
						errs <- fmt.Errorf("publish to Kafka: %w", err)
						cancel()
						return
					}
				}
				c.published.Add(end - start)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
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

// consumeFaults injects the consume faults as the effects count passes
// their thresholds.
func (c *chaos) consumeFaults(ctx context.Context) {
	for _, f := range c.consFaults {
		want := int64(math.Ceil(f.at * float64(c.opt.n)))
		for {
			rows, err := c.rows(ctx)
			if err == nil && rows >= want {
				break
			}
			if !sleep(ctx, 20*time.Millisecond) {
				return
			}
		}
		c.fire(ctx, f)
	}
}

func (c *chaos) progress(ctx context.Context) {
	every := 2 * time.Second
	if c.opt.n > 5000 {
		every = 5 * time.Second
	}
	for sleep(ctx, every) {
		rows, _ := c.rows(ctx)
		var failures int64
		_ = c.pool.QueryRow(ctx, "SELECT count(*) FROM "+c.tables.faults()).Scan(&failures)
		c.logf("published %d/%d copies, effects %d/%d, handler failures so far %d",
			c.published.Load(), len(c.copies), rows, c.opt.n, failures)
	}
}

func (c *chaos) rows(ctx context.Context) (int64, error) {
	var n int64
	err := c.pool.QueryRow(ctx, "SELECT count(*) FROM "+c.tables.effects()).Scan(&n)
	return n, err
}

func (c *chaos) distinct(ctx context.Context) (int64, error) {
	var n int64
	err := c.pool.QueryRow(ctx, "SELECT count(DISTINCT message_id) FROM "+c.tables.effects()).Scan(&n)
	return n, err
}

// killConnections makes the broker close every connection of the run's user:
// the publisher's and the consumer worker's.
func (c *chaos) killConnections(ctx context.Context) error {
	if err := c.rabbitUser.CloseConnections(ctx, "chaos: connection kill"); err != nil {
		return err
	}
	n := c.connKills.Add(1)
	c.logf("fault: RabbitMQ closed every connection of user %s (kill %d; %d copies published)", c.user, n, c.published.Load())
	return nil
}

// restartKafka stops the in-process broker (it saves its data) and starts it
// again on the same port and data directory.
func (c *chaos) restartKafka(ctx context.Context) error {
	c.kmu.Lock()
	defer c.kmu.Unlock()
	c.kafka.Close()
	c.logf("fault: Kafka broker stopped (%d copies published)", c.published.Load())
	sleep(ctx, 700*time.Millisecond)
	var err error
	for range 50 {
		var k *testenv.Kafka
		if k, err = testenv.StartKafka(c.kafkaOptions()...); err == nil {
			c.kafka = k
			n := c.kafkaRestarts.Add(1)
			c.logf("fault: Kafka broker started again on %s with its data (restart %d)", c.kafkaAddr, n)
			return nil
		}
		time.Sleep(100 * time.Millisecond) // the port may take a moment to free
	}
	return fmt.Errorf("restart kafka: %w", err)
}

// workerProc is one consumer worker process.
type workerProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	gen     int
	ending  atomic.Bool // set before the coordinator stops or kills it
	waitErr error       // valid after done
}

func (c *chaos) workerConfig(gen int) workerConfig {
	return workerConfig{
		amqp: c.userURL, postgres: c.opt.postgres, kafka: c.kafkaAddr,
		queue: c.queue, topic: c.topic, group: c.group, tables: c.tables, scope: c.scope,
		seed: c.opt.seed, failRate: c.opt.failRate, lease: c.opt.lease, timeout: c.opt.lease / 2,
		gen: gen, rabbit: c.opt.rabbit(), kafkaOn: c.opt.kafka(), noDedupe: c.opt.noDedupe, verbose: c.opt.verbose,
	}
}

func (c *chaos) startWorker() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.startWorkerLocked()
}

func (c *chaos) startWorkerLocked() error {
	c.gen++
	cfg := c.workerConfig(c.gen)
	cmd := exec.Command(c.exe, append([]string{workerCommand}, cfg.args()...)...)
	cmd.Env = append(os.Environ(), cfg.env()...)
	cmd.Stdout, cmd.Stderr = c.errOut, c.errOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("start consumer: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start consumer: %w", err)
	}
	w := &workerProc{cmd: cmd, stdin: stdin, done: make(chan struct{}), gen: c.gen}
	go func() {
		w.waitErr = cmd.Wait()
		if !w.ending.Load() {
			c.workerProblem(fmt.Errorf("consumer process %d (worker #%d) exited by itself: %v", cmd.Process.Pid, w.gen, w.waitErr))
		}
		close(w.done)
	}()
	c.worker = w
	c.logf("consumer process %d started (worker #%d)", cmd.Process.Pid, c.gen)
	return nil
}

// killWorker kills the consumer process with SIGKILL, mid-work, and starts a
// new one.
func (c *chaos) killWorker(ctx context.Context) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := c.worker
	if w == nil {
		return errors.New("no consumer process")
	}
	w.ending.Store(true)
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill consumer: %w", err)
	}
	<-w.done
	n := c.sigkills.Add(1)
	// The claims it held stay leased until their lease ends: their messages
	// come back to the next consumer, which waits for the lease.
	var held int64
	_ = c.pool.QueryRow(ctx, "SELECT count(*) FROM "+c.tables.dedupe()+" WHERE state = 'leased' AND expires_at > clock_timestamp()").Scan(&held)
	c.logf("fault: consumer process %d (worker #%d) killed with SIGKILL (kill %d), %d claims left leased", w.cmd.Process.Pid, w.gen, n, held)
	return c.startWorkerLocked()
}

// stopWorker stops the consumer process gracefully (it finishes and acks the
// messages in progress), killing it after 30 s.
func (c *chaos) stopWorker() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := c.worker
	if w == nil {
		return
	}
	c.worker = nil
	w.ending.Store(true)
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	_ = w.stdin.Close()
	select {
	case <-w.done:
		if w.waitErr != nil {
			c.workerProblem(fmt.Errorf("consumer process %d (worker #%d) did not stop cleanly: %v", w.cmd.Process.Pid, w.gen, w.waitErr))
		}
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
		c.workerProblem(fmt.Errorf("consumer process %d (worker #%d) did not stop within 30s", w.cmd.Process.Pid, w.gen))
	}
}

// workerProblem records a consumer process that crashed, failed a race check
// or hung: the run then fails whatever the counts say.
func (c *chaos) workerProblem(err error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	c.problems = append(c.problems, err.Error())
	fmt.Fprintln(c.errOut, "chaos:", err)
}

// backlog is what the consumers still have to do.
type backlog struct {
	distinct int64
	queue    int64 // messages ready in the queue
	lag      int64 // records of the topic not committed by the group
}

func (c *chaos) backlog(ctx context.Context) (backlog, error) {
	var b backlog
	var err error
	if b.distinct, err = c.distinct(ctx); err != nil {
		return b, err
	}
	if c.opt.rabbit() {
		if b.queue, err = c.queueLength(); err != nil {
			return b, err
		}
	}
	if c.opt.kafka() {
		if b.lag, _, err = c.kafkaLag(ctx); err != nil {
			return b, err
		}
	}
	return b, nil
}

// queueLength is the number of messages ready in the queue (all of them when
// no consumer is connected).
func (c *chaos) queueLength() (int64, error) {
	ch, err := c.admin.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(c.queue, true, false, false, false, nil)
	return int64(q.Messages), err
}

// kafkaLag returns how many records of the topic the group has not committed,
// and how many records the topic has.
func (c *chaos) kafkaLag(ctx context.Context) (lag, total int64, err error) {
	// A transport of its own: the broker restarts, pooled connections die.
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(c.kafkaAddr), Timeout: 3 * time.Second, Transport: tr}
	var reqs []kafkago.OffsetRequest
	var parts []int
	for p := range partitions {
		reqs = append(reqs, kafkago.LastOffsetOf(p))
		parts = append(parts, p)
	}
	lo, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{c.topic: reqs}})
	if err != nil {
		return 0, 0, err
	}
	last := map[int]int64{}
	for _, p := range lo.Topics[c.topic] {
		if p.Error != nil {
			return 0, 0, p.Error
		}
		last[p.Partition] = p.LastOffset
		total += p.LastOffset
	}
	of, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: c.group, Topics: map[string][]int{c.topic: parts}})
	if err != nil {
		return 0, 0, err
	}
	if of.Error != nil {
		return 0, 0, of.Error
	}
	committed := map[int]int64{}
	for _, p := range of.Topics[c.topic] {
		if p.Error != nil {
			return 0, 0, p.Error
		}
		committed[p.Partition] = max(p.CommittedOffset, 0)
	}
	for p, l := range last {
		lag += l - committed[p]
	}
	return lag, total, nil
}

// drain waits until every message was applied, every planned fault injected,
// the queue empty and the group's offsets at the end of the topic; then it
// stops the consumer and checks again with nothing in flight. A consumer
// that makes no progress for 20 s is replaced.
func (c *chaos) drain(ctx context.Context) (backlog, error) {
	const stall = 20 * time.Second
	for round := 1; ; round++ {
		last, lastChange := backlog{distinct: -1}, time.Now()
		for {
			b, err := c.backlog(ctx)
			if err == nil {
				faultsDone := true
				for _, f := range c.consFaults {
					faultsDone = faultsDone && f.tried.Load()
				}
				if faultsDone && b.distinct >= int64(c.opt.n) && b.queue == 0 && b.lag == 0 {
					break
				}
				if b != last {
					last, lastChange = b, time.Now()
				}
			}
			if time.Since(lastChange) > stall {
				c.logf("no progress for %v (%+v): replacing the consumer process", stall, last)
				c.stopWorker()
				if err := c.startWorker(); err != nil {
					return last, err
				}
				lastChange = time.Now()
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return last, fmt.Errorf("timed out waiting for the consumers (%+v): %w", last, ctx.Err())
			}
		}
		c.stopWorker()
		b, err := c.backlog(ctx)
		if err != nil {
			return b, err
		}
		if (b.queue == 0 && b.lag == 0) || round == 3 {
			c.logf("consumer stopped: %d messages applied, %d left in the queue, %d records not committed", b.distinct, b.queue, b.lag)
			return b, nil
		}
		c.logf("after stopping the consumer, %d messages in the queue and %d records not committed: consuming again", b.queue, b.lag)
		if err := c.startWorker(); err != nil {
			return b, err
		}
	}
}

// resetOffsets commits offset 0 on every partition for the (now empty)
// group, so that its next member reads the whole topic again.
func (c *chaos) resetOffsets(ctx context.Context) error {
	var commits []kafkago.OffsetCommit
	for p := range partitions {
		commits = append(commits, kafkago.OffsetCommit{Partition: p, Offset: 0})
	}
	var err error
	deadline := time.Now().Add(30 * time.Second) // killed members leave after their session
	for time.Now().Before(deadline) {
		err = func() error {
			tr := &kafkago.Transport{}
			defer tr.CloseIdleConnections()
			client := &kafkago.Client{Addr: kafkago.TCP(c.kafkaAddr), Timeout: 3 * time.Second, Transport: tr}
			resp, err := client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{
				GroupID: c.group, GenerationID: -1, Topics: map[string][]kafkago.OffsetCommit{c.topic: commits},
			})
			if err != nil {
				return err
			}
			for _, p := range resp.Topics[c.topic] {
				if p.Error != nil {
					return p.Error
				}
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			break
		}
	}
	return fmt.Errorf("reset the offsets of group %s: %w", c.group, err)
}

// replay resets the consumer group to the start of the topic and consumes
// every record again, in this process, through the same handler chain.
func (c *chaos) replay(ctx context.Context) error {
	if err := c.resetOffsets(ctx); err != nil {
		return err
	}
	lag, total, err := c.kafkaLag(ctx)
	if err != nil {
		return err
	}
	before, err := c.rows(ctx)
	if err != nil {
		return err
	}
	c.logf("replay: group %s reset to offset 0, %d records of %d to read again", c.group, lag, total)
	cfg := c.workerConfig(0)
	h, closeH, err := newHandler(ctx, c.pool, cfg)
	if err != nil {
		return err
	}
	defer closeH()
	var (
		mu   sync.Mutex
		seen = map[[2]int64]bool{}
		done = make(chan struct{})
	)
	counting := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		err := h.Handle(ctx, m)
		if err == nil {
			mu.Lock()
			seen[[2]int64{int64(m.Partition), m.Offset}] = true
			if int64(len(seen)) == total {
				close(done)
			}
			mu.Unlock()
		}
		return err
	})
	kc, err := newKafkaConsumer(cfg, counting, newLogger(cfg))
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- kc.Run(rctx) }()
	select {
	case <-done:
	case err = <-errc:
		stop()
		return fmt.Errorf("replay: %w", err)
	case <-ctx.Done():
	}
	stop()
	if rerr := <-errc; rerr != nil {
		return fmt.Errorf("replay: %w", rerr)
	}
	mu.Lock()
	replayed := int64(len(seen))
	mu.Unlock()
	after, err := c.rows(ctx)
	if err != nil {
		return err
	}
	c.replayed, c.replayNew = replayed, after-before
	c.logf("replay: read %d records from offset 0 again: %d new effects", replayed, after-before)
	if replayed < total {
		return fmt.Errorf("replay read %d of %d records: %w", replayed, total, ctx.Err())
	}
	return nil
}

// count reads the effects table and compares it with the messages sent.
func (c *chaos) count(ctx context.Context, res *result) error {
	via := make(map[uuid.UUID]string, len(c.msgs))
	for _, m := range c.msgs {
		via[m.id] = c.topic
		if m.rabbit {
			via[m.id] = c.queue
		}
	}
	rows, err := c.pool.Query(ctx, "SELECT message_id, count(*), min(source), max(source) FROM "+c.tables.effects()+" GROUP BY message_id")
	if err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	got := map[uuid.UUID]int64{}
	for rows.Next() {
		var id uuid.UUID
		var n int64
		var lo, hi string
		if err := rows.Scan(&id, &n, &lo, &hi); err != nil {
			rows.Close()
			return fmt.Errorf("count effects: %w", err)
		}
		got[id] = n
		if v, ok := via[id]; ok && (lo != v || hi != v) {
			res.misrouted++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	for id, n := range got {
		res.effects += n
		res.distinct++
		if n > 1 {
			res.duplicates++
		}
		if _, ok := via[id]; !ok {
			res.unexpected++
		}
	}
	for id := range via {
		if got[id] == 0 {
			res.lost++
		}
	}
	if err := c.pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE kind = 'panic') FROM "+c.tables.faults()).
		Scan(&res.handlerFailures, &res.panics); err != nil {
		return fmt.Errorf("count faults: %w", err)
	}
	res.replayNew, res.replayed = c.replayNew, c.replayed
	if c.opt.rabbit() {
		if n, err := c.queueLength(); err == nil {
			res.leftInQueue = n
		}
	}
	res.counted = true
	return nil
}
