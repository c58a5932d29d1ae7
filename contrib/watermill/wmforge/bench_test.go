package wmforge_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// BenchmarkRouterDedupe runs b.N messages through one Watermill router
// (GoChannel Pub/Sub, one handler) with each deduplicating middleware on
// the same handler; "redelivered" sends every message three times. Both
// sides keep their state in memory: our memory store, Watermill's
// map repository keyed by the message UUID (its default key, a payload
// checksum, would make distinct messages with equal payloads duplicates).
// "none" is the router without deduplication: the baseline.
func BenchmarkRouterDedupe(b *testing.B) {
	for _, copies := range []struct {
		name string
		n    int
	}{{"unique", 1}, {"redelivered", 3}} {
		for _, mw := range []struct {
			name string
			new  func(b *testing.B) message.HandlerMiddleware
		}{
			{"none", func(*testing.B) message.HandlerMiddleware { return nil }},
			{"uuidforge", func(b *testing.B) message.HandlerMiddleware {
				store, err := dedupe.NewMemory()
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = store.Close() })
				return newDedup(b, store).Middleware
			}},
			{"watermill", func(b *testing.B) message.HandlerMiddleware {
				repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				d := &middleware.Deduplicator{Repository: repo, KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }}
				return d.Middleware
			}},
		} {
			b.Run(copies.name+"/"+mw.name, func(b *testing.B) {
				benchRouter(b, copies.n, mw.new(b))
			})
		}
	}
}

func benchRouter(b *testing.B, copies int, mw message.HandlerMiddleware) {
	total := b.N * copies
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	seen := make(chan struct{}, total)
	r.AddMiddleware(func(h message.HandlerFunc) message.HandlerFunc { // outermost: counts duplicates too
		return func(m *message.Message) ([]*message.Message, error) {
			out, err := h(m)
			seen <- struct{}{}
			return out, err
		}
	})
	if mw != nil {
		r.AddMiddleware(mw)
	}
	r.AddConsumerHandler("bench", "t", ps, func(*message.Message) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Running()
	msgs := make([]*message.Message, 0, total)
	for range b.N {
		id := uuid.NewString()
		for range copies {
			msgs = append(msgs, message.NewMessage(id, make([]byte, 256)))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, m := range msgs {
		if err := ps.Publish("t", m); err != nil {
			b.Fatal(err)
		}
	}
	for range total {
		<-seen
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "msgs/s")
}
