package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// workerMain is the worker process: it consumes orders from RabbitMQ and
// publishes one invoice per order to Kafka, until its queue has been idle for
// a while. It returns the process's exit code.
func workerMain(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	amqpURL := fs.String("amqp", env(envAMQP, defaultAMQP), "RabbitMQ URL (default: $AMQP_URL or a local server)")
	redisURL := fs.String("redis", env(envRedis, defaultRedis), "Redis URL (default: $REDIS_URL or a local server)")
	prefix := fs.String("redis-prefix", redisstore.DefaultPrefix, "prefix of the dedupe keys")
	queue := fs.String("queue", "", "queue of orders")
	brokers := fs.String("brokers", "", "Kafka bootstrap addresses, comma-separated")
	topic := fs.String("topic", "", "topic of invoices")
	crashEvery := fs.Int("crash-every", 0, "kill this process after publishing every n-th order's invoice, on its first delivery")
	lease := fs.Duration("lease", time.Second, "dedupe lease")
	idle := fs.Duration("idle", time.Second, "exit once no order arrived for this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := work(ctx, *amqpURL, *redisURL, *prefix, *queue, strings.Split(*brokers, ","), *topic, *crashEvery, *lease, *idle); err != nil {
		fmt.Fprintf(os.Stderr, "worker %d: %v\n", os.Getpid(), err)
		return 1
	}
	return 0
}

func work(ctx context.Context, amqpURL, redisURL, prefix, queue string, brokers []string, topic string, crashEvery int, lease, idle time.Duration) error {
	if err := checkURL("Redis", redisURL); err != nil {
		return err
	}
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	pub, err := kafkapub.New(brokers, topic, gen)
	if err != nil {
		return err
	}
	defer pub.Close()

	// The dedupe store must outlive the process: a crashed worker's claim is
	// still there when its successor receives the same order, and keeps it
	// off limits until the lease runs out.
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store, err := redisstore.New(rdb, redisstore.WithPrefix(prefix))
	if err != nil {
		return err
	}

	pid := os.Getpid()
	var handled atomic.Int64
	handle := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		var o order
		if err := json.Unmarshal(m.Body, &o); err != nil {
			return consumer.Permanent(fmt.Errorf("decode order: %w", err))
		}
		im, err := invoice{Order: o.Number, Cents: o.Cents}.message()
		if err != nil {
			return consumer.Permanent(err)
		}
		// ctx carries the order's lineage (consumer.Lineage), so the
		// invoice's ID is derived from the order's ID.
		if err := pub.Publish(ctx, im); err != nil {
			return err
		}
		if crashEvery > 0 && o.Seq%crashEvery == 0 && !m.Redelivered {
			parent, _ := lineage.FromContext(ctx)
			fmt.Printf("worker %d: published the invoice for %s (caused by %s), now killed before the ack\n", pid, o.Number, parent.MessageID)
			kill()
		}
		handled.Add(1)
		return nil
	})

	// The consumer builds the standard chain from its options: Lineage (so
	// the handler's publishes derive their IDs from the order), then a
	// claim of the order's ID in Redis under the scope "invoicing", held
	// for the lease; a killed worker's claim blocks the redelivered order
	// until the lease runs out.
	act := &activity{last: time.Now()}
	c, err := rabbitsub.New(amqpURL, queue, handle,
		consumer.WithDedupe(store, "invoicing"),
		consumer.WithLease(lease),
		consumer.WithTimeout(lease*9/10),
		consumer.WithObserver(act),
		rabbitsub.WithPrefetch(1), rabbitsub.WithWorkers(1),
		consumer.WithBackoff(20*time.Millisecond, lease),
		consumer.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))))
	if err != nil {
		return err
	}
	fmt.Printf("worker %d: started\n", pid)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
			if act.idle(idle) {
				stopRun()
				return
			}
		}
	}()
	if err := c.Run(runCtx); err != nil {
		return err
	}
	fmt.Printf("worker %d: queue idle, stopping (acked %d orders, published %d invoices)\n", pid, act.acked.Load(), handled.Load())
	return ctx.Err()
}

// activity is a consumer.Observer that tracks the deliveries in progress,
// so that the worker can stop once its queue is idle. A delivery waiting
// for a dead worker's lease is in progress. Safe for concurrent use.
type activity struct {
	mu       sync.Mutex
	inFlight int
	last     time.Time // when the last delivery ended
	acked    atomic.Int64
}

func (a *activity) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	a.mu.Lock()
	a.inFlight++
	a.mu.Unlock()
	return ctx
}

func (a *activity) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (a *activity) DeliveryDone(_ context.Context, _ *consumer.Message, d consumer.Delivery) {
	a.mu.Lock()
	a.inFlight--
	a.last = time.Now()
	a.mu.Unlock()
	if d.Result == consumer.Processed || d.Result == consumer.Duplicate {
		a.acked.Add(1)
	}
}

// idle reports whether no delivery is in progress and none ended for d.
func (a *activity) idle(d time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inFlight == 0 && time.Since(a.last) > d
}

// kill ends the process the hard way, as a crash or kill -9 would: no deferred
// function runs, nothing is acknowledged, no claim is released.
func kill() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill()
	}
	time.Sleep(time.Second)
	os.Exit(137) // only if the signal did not end the process
}
