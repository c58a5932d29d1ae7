package rabbitsub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// BenchmarkConsume measures end-to-end consumer throughput from a RabbitMQ
// queue (4 workers, prefetch 64, default batch size) with and without
// dedupe on the memory store. Run with a fixed count, e.g.
// -benchtime=20000x.
func BenchmarkConsume(b *testing.B) {
	for _, name := range []string{"plain", "dedupe-memory"} {
		b.Run(name, func(b *testing.B) {
			b.StopTimer()
			var store dedupe.Store
			if name == "dedupe-memory" {
				store = testsink.Memory(b)
			}
			q := publishN(b, b.N)
			b.StartTimer()
			d := consumeOurs(b, q, b.N, store, rabbitsub.WithWorkers(4), rabbitsub.WithPrefetch(64))
			b.StopTimer()
			b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
		})
	}
}

// sideBySideMessages is how many messages each side consumes per round of
// BenchmarkConsumeSideBySide.
const sideBySideMessages = 4000

// BenchmarkConsumeSideBySide compares our consumer, with its defaults and
// deduplication on each store (memory, Redis, the PostgreSQL inbox), with
// the raw amqp091-go consumer (prefetch 16, an ack per message, no dedupe)
// on the same broker: each iteration is a round in which both consume
// sideBySideMessages 256-byte messages, in alternating order, so that load
// from other processes hits both alike. Our handler does nothing, except
// in inbox-postgres-write, where it inserts one row per message through
// the inbox transaction (the raw side still writes nothing). It reports
// the median rate of each side over the rounds and their ratio. Run with
// e.g. -benchtime=5x.
func BenchmarkConsumeSideBySide(b *testing.B) {
	for _, v := range []struct {
		name  string
		store func(testing.TB) dedupe.Store
		write bool
	}{
		{"dedupe-memory", testsink.Memory, false},
		{"dedupe-redis", testsink.Redis, false},
		{"inbox-postgres", testsink.Postgres, false},
		{"inbox-postgres-write", testsink.Postgres, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			store := v.store(b)
			var h consumer.Handler
			if v.write {
				h = consumer.HandlerFunc(testsink.New(b, testsink.Pool(b)).Handle)
			}
			var ours, raw []float64
			const n = sideBySideMessages
			for i := range b.N {
				sides := []func(){
					func() { raw = append(raw, n/consumeRaw(b, publishN(b, n), n).Seconds()) },
					func() { ours = append(ours, n/consumeWith(b, publishN(b, n), n, store, h).Seconds()) },
				}
				if i%2 == 1 {
					slices.Reverse(sides)
				}
				for _, side := range sides {
					side()
				}
			}
			o, r := median(ours), median(raw)
			b.ReportMetric(o, "ours-msgs/s")
			b.ReportMetric(r, "raw-msgs/s")
			b.ReportMetric(o/r, "ratio")
		})
	}
}

// BenchmarkBatchSize runs our consumer over the Redis store and the
// PostgreSQL inbox with several prefetch windows, worker counts and batch
// sizes, for choosing the defaults. Each iteration is a round that runs
// every configuration once on sideBySideMessages messages, so that load
// from other processes spreads over all of them; for each it reports the
// median over the rounds of the rate and of the median and 99th percentile
// of the time a delivery takes from the start of its processing to its ack
// (Processor.Begin to End, which includes waiting for the rest of its
// batch), as "<prefetch>/<workers>/<batch>-msgs/s", "-p50-ms" and
// "-p99-ms". Run with e.g. -benchtime=3x.
func BenchmarkBatchSize(b *testing.B) {
	configs := [][3]int{{16, 4, 1}, {64, 4, 16}, {256, 4, 1}, {256, 4, 8}, {256, 4, 16}, {256, 4, 32}, {256, 4, 64}, {512, 4, 64}, {512, 8, 64}}
	for _, store := range []struct {
		name string
		new  func(testing.TB) dedupe.Store
	}{{"redis", testsink.Redis}, {"postgres", testsink.Postgres}} {
		b.Run(store.name, func(b *testing.B) {
			s := store.new(b)
			const n = sideBySideMessages
			rates, p50s, p99s := make([][]float64, len(configs)), make([][]float64, len(configs)), make([][]float64, len(configs))
			for range b.N {
				for i, pb := range configs {
					q := publishN(b, n)
					lat := &latencies{}
					d := consumeOurs(b, q, n, s, rabbitsub.WithPrefetch(pb[0]), rabbitsub.WithWorkers(pb[1]),
						rabbitsub.WithBatchSize(pb[2]), consumer.WithObserver(lat))
					p50, p99 := lat.quantiles()
					rates[i] = append(rates[i], n/d.Seconds())
					p50s[i] = append(p50s[i], float64(p50.Microseconds())/1000)
					p99s[i] = append(p99s[i], float64(p99.Microseconds())/1000)
				}
			}
			for i, pb := range configs {
				name := fmt.Sprintf("%d/%d/%d", pb[0], pb[1], pb[2])
				b.ReportMetric(median(rates[i]), name+"-msgs/s")
				b.ReportMetric(median(p50s[i]), name+"-p50-ms")
				b.ReportMetric(median(p99s[i]), name+"-p99-ms")
			}
		})
	}
}

// latencies records how long each delivery took from Begin to End.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}
func (l *latencies) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}
func (l *latencies) DeliveryDone(_ context.Context, _ *consumer.Message, d consumer.Delivery) {
	l.mu.Lock()
	l.d = append(l.d, d.Duration)
	l.mu.Unlock()
}

func (l *latencies) quantiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	slices.Sort(l.d)
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// publishN declares a queue and publishes n messages with 256-byte bodies
// and IDs to it, with confirms; the queue is deleted when b ends.
func publishN(b *testing.B, n int) string {
	b.Helper()
	url := testenv.AMQPURL(b)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(b, "RabbitMQ", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	q := testenv.Name(b, "bench")
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if conn, err := amqp.Dial(url); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
			}
			_ = conn.Close()
		}
	})
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	body := make([]byte, 256)
	confs := make([]*amqp.DeferredConfirmation, 0, n)
	for range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{MessageId: uuid.NewString(), Type: "bench", Body: body})
		if err != nil {
			b.Fatal(err)
		}
		confs = append(confs, dc)
	}
	for _, dc := range confs {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			b.Fatal("publish not confirmed", err)
		}
	}
	return q
}

// consumeOurs consumes n messages from q with our consumer and a handler
// that does nothing, deduplicating on store (none when nil) in the scope
// q, and returns the time from starting it to the last message acked.
func consumeOurs(b *testing.B, q string, n int, store dedupe.Store, opts ...consumer.Option) time.Duration {
	b.Helper()
	return consumeWith(b, q, n, store, nil, opts...)
}

// consumeWith is consumeOurs with the handler next (nothing when nil).
func consumeWith(b *testing.B, q string, n int, store dedupe.Store, next consumer.Handler, opts ...consumer.Option) time.Duration {
	b.Helper()
	var handled atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		handled.Add(1)
		if next != nil {
			return next.Handle(ctx, m)
		}
		return nil
	})
	acked := &ackCounter{n: int64(n), done: make(chan struct{})}
	opts = append([]consumer.Option{consumer.WithObserver(acked)}, opts...)
	if store != nil {
		opts = append(opts, consumer.WithDedupe(store, q))
	}
	c, err := rabbitsub.New(testenv.AMQPURL(b), q, h, opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	began := time.Now()
	go func() { stopped <- c.Run(ctx) }()
	select {
	case <-acked.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("handled %d, settled %d of %d", handled.Load(), acked.settled.Load(), n)
	}
	elapsed := time.Since(began)
	cancel()
	if err := <-stopped; err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// ackCounter closes done when n deliveries were settled (End is called
// after the ack).
type ackCounter struct {
	n       int64
	settled atomic.Int64
	done    chan struct{}
}

func (a *ackCounter) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}
func (a *ackCounter) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}
func (a *ackCounter) DeliveryDone(context.Context, *consumer.Message, consumer.Delivery) {
	if a.settled.Add(1) == a.n {
		close(a.done)
	}
}

// consumeRaw consumes n messages from q with amqp091-go alone (prefetch 16,
// an ack per message, no dedupe) and returns the time from dialling to the
// last ack.
func consumeRaw(b *testing.B, q string, n int) time.Duration {
	b.Helper()
	began := time.Now()
	conn, err := amqp.Dial(testenv.AMQPURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Qos(16, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	for d := range deliveries {
		handled.Add(1)
		if err := d.Ack(false); err != nil {
			b.Fatal(err)
		}
		if handled.Load() == int64(n) {
			break
		}
	}
	return time.Since(began)
}
