package bench

import (
	"context"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
)

// The same work for both: a checksum of the payload.
func work(body []byte) error {
	if crc32.ChecksumIEEE(body) == 1 {
		return errors.New("unlikely")
	}
	return nil
}

type fixture struct {
	ids  []uuid.UUID
	strs []string
	body []byte
}

// newFixture makes n distinct messages; with copies > 1 each is delivered
// copies times in a row (a redelivery burst).
func newFixture(n, copies int) fixture {
	f := fixture{body: make([]byte, 256)}
	for len(f.ids) < n {
		id := uuid.New()
		for c := 0; c < copies && len(f.ids) < n; c++ {
			f.ids = append(f.ids, id)
			f.strs = append(f.strs, id.String())
		}
	}
	return f
}

func ours(b *testing.B) consumer.Handler {
	store, err := dedupe.NewMemory()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	dd := consumer.Dedupe(store, "bench")
	return dd(consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error { return work(m.Body) }))
}

func watermill(b *testing.B, byUUID bool) message.HandlerFunc {
	repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	d := &middleware.Deduplicator{Repository: repo, Timeout: time.Minute}
	if byUUID {
		d.KeyFactory = func(m *message.Message) (string, error) { return m.UUID, nil }
	} // else Watermill's default: Adler-32 of the payload
	return d.Middleware(func(m *message.Message) ([]*message.Message, error) { return nil, work(m.Payload) })
}

// BenchmarkDedupe runs n messages through each dedupe middleware and the
// same handler; each payload is 256 bytes starting with the message's ID.
// "unique": every message new; "redelivered": every message three times.
// Watermill's default key is an Adler-32 of the whole payload, so it is also
// run keyed by the message UUID, the equivalent of our ID-based dedupe. Both
// sides use their in-memory store.
func BenchmarkDedupe(b *testing.B) {
	for _, tc := range []struct {
		name   string
		copies int
	}{{"unique", 1}, {"redelivered", 3}} {
		b.Run(tc.name+"/uuidforge", func(b *testing.B) {
			f := newFixture(b.N, tc.copies)
			h := ours(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				copy(f.body, f.ids[i][:])
				m := &consumer.Message{ID: f.ids[i], CorrelationID: f.ids[i], Body: f.body}
				if err := h.Handle(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(tc.name+"/watermill-uuid-key", func(b *testing.B) {
			f := newFixture(b.N, tc.copies)
			h := watermill(b, true)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				copy(f.body, f.ids[i][:])
				if _, err := h(message.NewMessage(f.strs[i], f.body)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(tc.name+"/watermill-default-key", func(b *testing.B) {
			f := newFixture(b.N, tc.copies)
			h := watermill(b, false)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				copy(f.body, f.ids[i][:])
				if _, err := h(message.NewMessage(f.strs[i], f.body)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestFailedHandlerIsRetried shows the behavioural difference the benchmark
// does not: Watermill marks a message seen before its handler runs, so a
// handler that fails once makes the redelivery a "duplicate" and the
// message is never processed; ours releases the claim and processes it.
func TestFailedHandlerIsRetried(t *testing.T) {
	id := uuid.New()
	fail := true
	processed := 0
	handle := func() error {
		if fail {
			fail = false
			return errors.New("transient")
		}
		processed++
		return nil
	}

	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dd := consumer.Dedupe(store, "test")
	h := dd(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return handle() }))
	for range 2 { // delivery, then the redelivery after the failure
		_ = h.Handle(context.Background(), &consumer.Message{ID: id})
	}
	if processed != 1 {
		t.Fatalf("uuidforge: processed %d times, want 1", processed)
	}

	fail, processed = true, 0
	repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wm := (&middleware.Deduplicator{Repository: repo, KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }}).
		Middleware(func(*message.Message) ([]*message.Message, error) { return nil, handle() })
	for range 2 {
		_, _ = wm(message.NewMessage(id.String(), []byte("x")))
	}
	if processed != 0 {
		t.Fatalf("watermill processed the redelivery %d times; the comparison's premise changed", processed)
	}
}
