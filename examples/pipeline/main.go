package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// namespace is shared by every process of the pipeline: the parent that places
// orders and checks the result, and every worker.
const namespace = "shop.example.com"

// Message types of the pipeline.
const (
	typeOrder   = "order.placed"
	typeInvoice = "invoice.requested"
)

// config is what one run of the parent uses.
type config struct {
	AMQPURL, RedisURL string
	Orders            int           // orders placed
	CrashEvery        int           // the worker is killed after publishing every n-th order's invoice (0: never)
	Lease             time.Duration // dedupe lease: how long a dead worker's claim blocks its order
	Executable        string        // the program to start as worker; "" means this one
	Timeout           time.Duration
	Stderr            io.Writer // where the workers' errors and warnings go; nil means os.Stderr
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(workerMain(os.Args[2:]))
	}
	cfg := config{}
	flag.StringVar(&cfg.AMQPURL, "amqp", env(envAMQP, defaultAMQP), "RabbitMQ URL (default: $AMQP_URL or a local server)")
	flag.StringVar(&cfg.RedisURL, "redis", env(envRedis, defaultRedis), "Redis URL, the worker's dedupe store (default: $REDIS_URL or a local server)")
	flag.IntVar(&cfg.Orders, "orders", 12, "orders to place")
	flag.IntVar(&cfg.CrashEvery, "crash-every", 4, "kill the worker after publishing every n-th invoice (0: never)")
	flag.DurationVar(&cfg.Lease, "lease", time.Second, "dedupe lease of the worker")
	flag.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
		os.Exit(1)
	}
}

// order is the input event; Seq only serves to pick which orders crash the
// worker.
type order struct {
	Number string `json:"number"`
	Cents  int    `json:"cents"`
	Seq    int    `json:"seq"`
}

func (o order) message() (publisher.Message, error) {
	body, err := json.Marshal(o)
	return publisher.Message{Type: typeOrder, Key: []any{o.Number}, Body: body}, err
}

// invoice is the derived event.
type invoice struct {
	Order string `json:"order"`
	Cents int    `json:"cents"`
}

func (i invoice) message() (publisher.Message, error) {
	body, err := json.Marshal(i)
	return publisher.Message{Type: typeInvoice, Key: []any{i.Order}, Body: body}, err
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Orders < 1 || cfg.CrashEvery < 0 || cfg.Lease <= 0 {
		return fmt.Errorf("want orders >= 1, crash-every >= 0 and a positive lease, got %d, %d, %v", cfg.Orders, cfg.CrashEvery, cfg.Lease)
	}
	if err := checkURL("RabbitMQ", cfg.AMQPURL); err != nil {
		return err
	}
	if err := checkURL("Redis", cfg.RedisURL); err != nil {
		return err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Executable = exe
	}
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}

	// Names of this run's queue, topic and Redis keys.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	queue, topic := "uuidforge.pipeline.orders."+runID, "pipeline-invoices-"+runID
	redisPrefix := "uuidforge:pipeline:" + runID + ":"
	defer cleanRedis(cfg.RedisURL, redisPrefix)

	brokers, stopKafka, err := startKafka()
	if err != nil {
		return err
	}
	defer stopKafka()
	if err := createTopic(ctx, brokers, topic); err != nil {
		return err
	}
	if err := declareQueue(cfg.AMQPURL, queue); err != nil {
		return err
	}
	defer deleteQueue(cfg.AMQPURL, queue)
	fmt.Fprintf(out, "orders in RabbitMQ queue %s; invoices out to Kafka topic %s at %s\n", queue, topic, strings.Join(brokers, ","))

	// Place the orders and work out, from business data alone, the ID every
	// invoice must get.
	orders := make([]order, cfg.Orders)
	wantInvoice := make(map[string]uuid.UUID, cfg.Orders) // order number -> invoice message ID
	orderIDs := make(map[string]uuid.UUID, cfg.Orders)
	pub, err := rabbitpub.New(cfg.AMQPURL, gen, rabbitpub.WithRoutingKey(func(*publisher.Message) string { return queue }))
	if err != nil {
		return err
	}
	defer pub.Close()
	for i := range orders {
		o := order{Number: fmt.Sprintf("SO-%d", 1001+i), Cents: 1500 + 100*i, Seq: i + 1}
		orders[i] = o
		m, err := o.message()
		if err != nil {
			return err
		}
		if err := pub.Publish(ctx, m); err != nil {
			return fmt.Errorf("place order %s: %w", o.Number, err)
		}
		parent, err := publisher.IDs(ctx, gen, &m)
		if err != nil {
			return err
		}
		im, err := invoice{Order: o.Number, Cents: o.Cents}.message()
		if err != nil {
			return err
		}
		derived, err := publisher.IDs(lineage.NewContext(ctx, parent), gen, &im)
		if err != nil {
			return err
		}
		orderIDs[o.Number], wantInvoice[o.Number] = parent.MessageID, derived.MessageID
	}
	fmt.Fprintf(out, "placed %d orders\n", cfg.Orders)

	// Downstream: an ordinary consumer with the dedupe middleware, recording
	// every raw record it is handed.
	down := newDownstream()
	downCtx, stopDown := context.WithCancel(ctx)
	defer stopDown()
	downErr := make(chan error, 1)
	go func() { downErr <- down.run(downCtx, brokers, topic, cfg.Stderr) }()

	crashes, err := superviseWorkers(ctx, cfg, out, queue, []string{
		"-redis-prefix", redisPrefix, "-queue", queue, "-brokers", strings.Join(brokers, ","), "-topic", topic,
		"-crash-every", strconv.Itoa(cfg.CrashEvery), "-lease", cfg.Lease.String(),
	})
	if err != nil {
		return err
	}

	// Wait until downstream has been handed every record on the topic.
	records, err := kafkatest.TopicSize(ctx, brokers, topic)
	if err != nil {
		return err
	}
	if err := down.waitFor(ctx, records, downErr); err != nil {
		return err
	}
	stopDown()
	if err := <-downErr; err != nil {
		return err
	}
	return down.report(out, orders, orderIDs, wantInvoice, crashes, records)
}

// superviseWorkers starts the worker and starts it again each time it is
// killed, until it exits by itself (its queue drained). It returns how many
// times the worker was killed.
func superviseWorkers(ctx context.Context, cfg config, out io.Writer, queue string, args []string) (crashes int, err error) {
	for start := 1; ; start++ {
		if start > cfg.Orders+2 {
			return crashes, fmt.Errorf("worker started %d times without finishing", start-1)
		}
		cmd := exec.CommandContext(ctx, cfg.Executable, append([]string{"worker"}, args...)...)
		cmd.Stdout, cmd.Stderr = out, cfg.Stderr
		// URLs may carry passwords: they go in the environment, not on a
		// command line every user of the machine can read.
		cmd.Env = append(os.Environ(), envAMQP+"="+cfg.AMQPURL, envRedis+"="+cfg.RedisURL)
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			// The worker stops once its queue looks idle; make sure it is
			// empty (a slow start could look idle too).
			n, err := queueDepth(cfg.AMQPURL, queue)
			if err != nil {
				return crashes, err
			}
			if n == 0 {
				return crashes, nil
			}
			fmt.Fprintf(out, "supervisor: worker stopped with %d orders left; restarting it\n", n)
		case ctx.Err() != nil:
			return crashes, ctx.Err()
		case errors.As(err, &exit) && (exit.ExitCode() == -1 || exit.ExitCode() == 128+9):
			// -1: ended by a signal (SIGKILL here).
			crashes++
			fmt.Fprintf(out, "supervisor: worker %d %v; restarting it\n", exit.Pid(), err)
		default:
			return crashes, fmt.Errorf("worker: %w", err)
		}
	}
}

// downstream consumes the invoices. Safe for concurrent use.
type downstream struct {
	mu        sync.Mutex
	raw       map[string][]consumer.Message // record key (order number) -> every record handed to the consumer
	processed map[uuid.UUID]int             // invoice ID -> times the handler ran
	delivered atomic.Int64
}

func newDownstream() *downstream {
	return &downstream{raw: make(map[string][]consumer.Message), processed: make(map[uuid.UUID]int)}
}

func (d *downstream) run(ctx context.Context, brokers []string, topic string, stderr io.Writer) error {
	store, err := dedupe.NewMemory()
	if err != nil {
		return err
	}
	defer store.Close()
	handle := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		d.mu.Lock()
		d.processed[m.ID]++
		d.mu.Unlock()
		return nil
	})
	c, err := kafkasub.New(brokers, topic, "accounting", handle,
		consumer.WithDedupe(store, "accounting"),
		consumer.WithObserver(d), // records every record handed to the consumer
		kafkasub.WithPartitionParallelism(3),
		consumer.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// DeliveryStart, AttemptDone and DeliveryDone make downstream a
// consumer.Observer: it records each record processed or skipped as a
// duplicate.
func (d *downstream) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}

func (d *downstream) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (d *downstream) DeliveryDone(_ context.Context, m *consumer.Message, r consumer.Delivery) {
	if r.Result != consumer.Processed && r.Result != consumer.Duplicate {
		return
	}
	d.mu.Lock()
	d.raw[string(m.Key)] = append(d.raw[string(m.Key)], consumer.Message{ID: m.ID, CausationID: m.CausationID, Partition: m.Partition, Offset: m.Offset})
	d.mu.Unlock()
	d.delivered.Add(1)
}

func (d *downstream) waitFor(ctx context.Context, records int, runErr <-chan error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for d.delivered.Load() < int64(records) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("downstream got %d of %d records: %w", d.delivered.Load(), records, ctx.Err())
		case err := <-runErr:
			return fmt.Errorf("downstream stopped after %d of %d records: %v", d.delivered.Load(), records, err)
		case <-t.C:
		}
	}
	return nil
}

// report prints each order's invoice and the summary line, and returns an
// error if the pipeline lost, doubled or mislabelled anything.
func (d *downstream) report(out io.Writer, orders []order, orderIDs, wantInvoice map[string]uuid.UUID, crashes, records int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lost, differing, processed int
	for _, o := range orders {
		copies := d.raw[o.Number]
		ids := map[uuid.UUID]bool{}
		for _, c := range copies {
			ids[c.ID] = true
		}
		want := wantInvoice[o.Number]
		ok := len(ids) == 1 && ids[want] && copies[0].CausationID == orderIDs[o.Number]
		if !ok {
			differing++
		}
		if d.processed[want] == 0 {
			lost++
		}
		if len(copies) > 1 || !ok {
			var where []string
			for _, c := range copies {
				where = append(where, fmt.Sprintf("%d/%d", c.Partition, c.Offset))
			}
			same := "all with the expected message-id " + want.String()
			if !ok {
				same = fmt.Sprintf("message-ids %v, expected %s caused by %s", slices.Collect(maps.Keys(ids)), want, orderIDs[o.Number])
			}
			fmt.Fprintf(out, "invoice for %s: %d records on the topic (partition/offset %s), %s; processed %d time(s) downstream\n",
				o.Number, len(copies), strings.Join(where, " "), same, d.processed[want])
		}
	}
	for _, n := range d.processed {
		processed += n
	}
	unique := 0
	for _, copies := range d.raw {
		seen := []uuid.UUID{}
		for _, c := range copies {
			if !slices.Contains(seen, c.ID) {
				seen = append(seen, c.ID)
			}
		}
		unique += len(seen)
	}
	fmt.Fprintf(out, "pipeline: inputs=%d crashes=%d derived_records=%d derived_unique=%d processed_downstream=%d ids_differing=%d lost=%d\n",
		len(orders), crashes, records, unique, processed, differing, lost)
	if lost != 0 || differing != 0 || processed != len(orders) || unique != len(orders) {
		return fmt.Errorf("derived events not exactly once: %d lost, %d with unexpected IDs, %d processed for %d orders", lost, differing, processed, len(orders))
	}
	return nil
}

func createTopic(ctx context.Context, brokers []string, topic string) error {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}},
	})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("kafka: create topic %s: %w", topic, err)
	}
	return nil
}

func declareQueue(url, queue string) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(queue, true, false, false, false, nil)
		return err
	})
}

func deleteQueue(url, queue string) {
	_ = withChannel(url, func(ch *amqp.Channel) error {
		_, _ = ch.QueueDelete(queue+consumer.DeadLetterSuffix, false, false, false)
		_, err := ch.QueueDelete(queue, false, false, false)
		return err
	})
}

// queueDepth returns how many messages wait in queue (not counting those
// delivered and not yet acknowledged, which a consumer that has exited no
// longer holds).
func queueDepth(url, queue string) (n int, err error) {
	err = withChannel(url, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		n = q.Messages
		return err
	})
	return n, err
}

// withChannel runs f on a channel of a new connection. url has passed
// checkURL: amqp091-go's parse errors quote the URL.
func withChannel(url string, f func(*amqp.Channel) error) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	if err := f(ch); err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	return nil
}

// cleanRedis deletes the run's dedupe records. url has passed checkURL:
// go-redis's parse errors quote the URL.
func cleanRedis(url, prefix string) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
