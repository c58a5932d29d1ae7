package kafkasub_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// BenchmarkConsume measures end-to-end consumer throughput from the
// in-process Kafka broker (3 partitions handled in parallel, a synchronous
// commit per record) with and without dedupe on the memory store. Run with
// a fixed count, e.g. -benchtime=5000x.
func BenchmarkConsume(b *testing.B) {
	for _, name := range []string{"plain", "dedupe-memory"} {
		b.Run(name, func(b *testing.B) {
			k, err := testenv.StartKafka()
			if err != nil {
				testenv.Unavailable(b, "Kafka", err)
			}
			defer k.Close()
			topic, group := testenv.Name(b, "bench"), testenv.Name(b, "group")
			w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: topic, RequiredAcks: kafkago.RequireAll,
				AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond, BatchSize: 1000, Balancer: &kafkago.Hash{}}
			defer w.Close()
			ctx := context.Background()
			body := make([]byte, 256)
			batch := make([]kafkago.Message, 0, 1000)
			flush := func() {
				for range 50 {
					if err = w.WriteMessages(ctx, batch...); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
			for i := range b.N {
				batch = append(batch, idMessage(fmt.Sprint("k", i), uuid.New(), string(body)))
				if len(batch) == cap(batch) {
					flush()
				}
			}
			if len(batch) > 0 {
				flush()
			}
			var handled atomic.Int64
			done := make(chan struct{})
			h := consumer.Handler(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
				if handled.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			}))
			mws := []consumer.Middleware{consumer.Lineage()}
			if name == "dedupe-memory" {
				dd := consumer.Dedupe(testsink.Memory(b), group)
				mws = append(mws, dd)
			}
			h = consumer.Chain(append(mws, consumer.Recover())...)(h)
			c, err := kafkasub.New(k.Brokers(), topic, group, h, kafkasub.WithPartitionParallelism(3))
			if err != nil {
				b.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			stopped := make(chan error, 1)
			b.ResetTimer()
			go func() { stopped <- c.Run(runCtx) }()
			select {
			case <-done:
			case <-time.After(5 * time.Minute):
				b.Fatalf("handled %d of %d", handled.Load(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			cancel()
			if err := <-stopped; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkConsumeSideBySide compares the consumer, with a dedupe store,
// against kafka-go's consumer-group Reader committing each record
// synchronously (FetchMessage, then CommitMessages) with no dedupe, in
// interleaved rounds: each iteration is one round of both, in alternating
// order, so that load from other processes hits both alike. Run with e.g.
// -benchtime=3x.
//
// A round writes n records of 256 bytes to a fresh topic (3 partitions;
// untimed) and consumes them with a fresh group; its rate is n-1 divided by
// the time from the first record settled to the last (joining the group is
// left out). A record is settled once committed: for the Reader when
// CommitMessages returned, for the consumer when the delivery ended (the
// observer's DeliveryDone, which follows the commit). The consumer handles
// the 3 partitions in parallel. It reports the medians of the rounds'
// rates, ours-msgs/s and raw-msgs/s.
func BenchmarkConsumeSideBySide(b *testing.B) {
	const n = 20000
	for _, sc := range []struct {
		name  string
		store func(testing.TB) dedupe.Store
	}{
		{"dedupe-redis", testsink.Redis},
		{"inbox-postgres", testsink.Postgres},
		{"dedupe-memory", testsink.Memory},
	} {
		b.Run(sc.name, func(b *testing.B) {
			k, err := testenv.StartKafka()
			if err != nil {
				testenv.Unavailable(b, "Kafka", err)
			}
			defer k.Close()
			store := sc.store(b)
			var ours, raw []float64
			for i := range b.N {
				if i%2 == 0 {
					raw = append(raw, consumeRaw(b, k.Brokers(), n))
					ours = append(ours, consumeOurs(b, k.Brokers(), store, n))
				} else {
					ours = append(ours, consumeOurs(b, k.Brokers(), store, n))
					raw = append(raw, consumeRaw(b, k.Brokers(), n))
				}
			}
			b.ReportMetric(median(ours), "ours-msgs/s")
			b.ReportMetric(median(raw), "raw-msgs/s")
		})
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// settleClock times the records settled in a round.
type settleClock struct {
	want        int64
	n           atomic.Int64
	first, last atomic.Int64 // UnixNano
	done        chan struct{}
}

func newSettleClock(n int) *settleClock {
	return &settleClock{want: int64(n), done: make(chan struct{})}
}

func (c *settleClock) settled() {
	now := time.Now().UnixNano()
	switch c.n.Add(1) {
	case 1:
		c.first.Store(now)
	case c.want:
		c.last.Store(now)
		close(c.done)
	}
}

func (c *settleClock) wait(b *testing.B) float64 {
	b.Helper()
	select {
	case <-c.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d records settled", c.n.Load(), c.want)
	}
	return float64(c.want-1) / time.Duration(c.last.Load()-c.first.Load()).Seconds()
}

// DeliveryDone of a processed record follows its commit.
func (c *settleClock) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}
func (c *settleClock) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}
func (c *settleClock) DeliveryDone(_ context.Context, _ *consumer.Message, d consumer.Delivery) {
	if d.Result == consumer.Processed {
		c.settled()
	}
}

// fill writes n records of 256 bytes with message IDs to a new topic.
func fill(b *testing.B, brokers []string, n int) string {
	b.Helper()
	topic := testenv.Name(b, "bench")
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond, BatchSize: 1000, Balancer: &kafkago.Hash{}}
	defer w.Close()
	body := string(make([]byte, 256))
	batch := make([]kafkago.Message, 0, 1000)
	flush := func() {
		var err error
		for range 50 { // topic creation is asynchronous
			if err = w.WriteMessages(context.Background(), batch...); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		batch = append(batch, idMessage(fmt.Sprint("k", i), uuid.New(), body))
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	return topic
}

// consumeRaw returns the rate of a kafka-go group Reader that fetches and
// commits each record in turn.
func consumeRaw(b *testing.B, brokers []string, n int) float64 {
	b.Helper()
	topic := fill(b, brokers, n)
	r := kafkago.NewReader(rawReaderConfig(brokers, topic, testenv.Name(b, "raw")))
	defer r.Close()
	clock := newSettleClock(n)
	ctx := context.Background()
	for range n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			b.Fatal(err)
		}
		clock.settled()
	}
	return clock.wait(b)
}

// consumeOurs returns the rate of the consumer with store.
func consumeOurs(b *testing.B, brokers []string, store dedupe.Store, n int) float64 {
	b.Helper()
	topic := fill(b, brokers, n)
	group := testenv.Name(b, "ours")
	clock := newSettleClock(n)
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	c, err := kafkasub.New(brokers, topic, group, h, consumer.WithDedupe(store, group),
		consumer.WithObserver(clock), kafkasub.WithPartitionParallelism(3))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	rate := clock.wait(b)
	cancel()
	if err := <-stopped; err != nil {
		b.Fatal(err)
	}
	return rate
}
