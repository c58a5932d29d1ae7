package consumer_test

import (
	"context"
	"hash/crc32"
	"testing"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
)

// benchHandler does a little work per message, like decoding a payload.
var benchHandler = consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
	if crc32.ChecksumIEEE(m.Body) == 1 {
		return nil
	}
	return nil
})

func benchChains(b *testing.B) map[string]consumer.Handler {
	store, err := dedupe.NewMemory()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	dd := consumer.Dedupe(store, "bench")
	return map[string]consumer.Handler{
		"plain":         consumer.Chain(consumer.Lineage(), consumer.Recover())(benchHandler),
		"dedupe-memory": consumer.Chain(consumer.Lineage(), dd, consumer.Recover())(benchHandler),
	}
}

func benchIDs(n int) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}

// BenchmarkProcess runs each message through the transport loops' processor
// and the middleware chain, with and without dedupe on the memory store, so
// the two lines of one run give the cost of dedupe per message.
func BenchmarkProcess(b *testing.B) {
	body := make([]byte, 256)
	for _, name := range []string{"plain", "dedupe-memory"} {
		b.Run(name, func(b *testing.B) {
			p := consumer.Processor{Handler: benchChains(b)[name]}
			ids := benchIDs(b.N)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m := &consumer.Message{ID: ids[i], CorrelationID: ids[i], Type: "bench", Body: body}
				if out, err := p.Process(ctx, ctx, m); out != consumer.OutcomeAck {
					b.Fatal(out, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkProcessParallel is BenchmarkProcess with one goroutine per CPU,
// like the RabbitMQ loop's workers.
func BenchmarkProcessParallel(b *testing.B) {
	body := make([]byte, 256)
	for _, name := range []string{"plain", "dedupe-memory"} {
		b.Run(name, func(b *testing.B) {
			p := consumer.Processor{Handler: benchChains(b)[name]}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := uuid.New()
					m := &consumer.Message{ID: id, CorrelationID: id, Type: "bench", Body: body}
					if out, err := p.Process(ctx, ctx, m); out != consumer.OutcomeAck {
						b.Error(out, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
