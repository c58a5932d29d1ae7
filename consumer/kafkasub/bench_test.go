package kafkasub_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
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
