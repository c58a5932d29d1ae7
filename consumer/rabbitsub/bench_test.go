package rabbitsub_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// BenchmarkConsume measures end-to-end consumer throughput from a RabbitMQ
// queue (4 workers, prefetch 64, ack per message) with and without dedupe
// on the memory store. Run with a fixed count, e.g. -benchtime=20000x.
func BenchmarkConsume(b *testing.B) {
	for _, name := range []string{"plain", "dedupe-memory"} {
		b.Run(name, func(b *testing.B) {
			b.StopTimer()
			d := consumeOnce(b, b.N, name == "dedupe-memory", b.StartTimer)
			b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
		})
	}
}

// BenchmarkConsumeSideBySide alternates the two variants of
// BenchmarkConsume, 5000 messages each per iteration, so that load from
// other processes hits both alike; it reports both rates and the slowdown.
// Run with e.g. -benchtime=6x.
func BenchmarkConsumeSideBySide(b *testing.B) {
	const n = 5000
	var plain, dd time.Duration
	for i := range b.N {
		if i%2 == 0 {
			plain += consumeOnce(b, n, false, nil)
			dd += consumeOnce(b, n, true, nil)
		} else {
			dd += consumeOnce(b, n, true, nil)
			plain += consumeOnce(b, n, false, nil)
		}
	}
	p, d := float64(b.N*n)/plain.Seconds(), float64(b.N*n)/dd.Seconds()
	b.ReportMetric(p, "plain-msgs/s")
	b.ReportMetric(d, "dedupe-msgs/s")
	b.ReportMetric(100*(p-d)/p, "slowdown-%")
}

// consumeOnce publishes n messages (untimed), then consumes them and returns
// the time from starting the consumer to the last message handled.
func consumeOnce(b *testing.B, n int, withDedupe bool, startTimer func()) time.Duration {
	b.Helper()
	url := testenv.AMQPURL(b)
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
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
	defer ch.QueueDelete(q, false, false, false)
	defer ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	body := make([]byte, 256)
	var confs []*amqp.DeferredConfirmation
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
	var handled atomic.Int64
	done := make(chan struct{})
	h := consumer.Handler(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		if handled.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}))
	mws := []consumer.Middleware{consumer.Lineage()}
	if withDedupe {
		dd := consumer.Dedupe(testsink.Memory(b), q)
		mws = append(mws, dd)
	}
	h = consumer.Chain(append(mws, consumer.Recover())...)(h)
	c, err := rabbitsub.New(url, q, h, rabbitsub.WithWorkers(4), rabbitsub.WithPrefetch(64))
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	if startTimer != nil {
		startTimer()
	}
	began := time.Now()
	go func() { stopped <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("handled %d of %d", handled.Load(), n)
	}
	elapsed := time.Since(began)
	b.StopTimer()
	cancel()
	if err := <-stopped; err != nil {
		b.Fatal(err)
	}
	return elapsed
}
