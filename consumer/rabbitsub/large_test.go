package rabbitsub_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
)

// largeBody is the body of the large-message probe: 100 MB (10^8 bytes), so
// that its envelope (4/3 of it) stays below RabbitMQ's default
// max_message_size of 128 MiB.
const largeBody = 100_000_000

// heapPeak samples the heap until stopped and returns the highest
// HeapInuse seen.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// A 100 MB message reaches the handler whole, and its dead letter, when it
// must be an envelope, is stored; the test reports the consumer process's
// memory for both. The consumer itself makes no copy of the body
// (TestNoBodyCopies); amqp091-go assembles it by appending frame after
// frame, which the figures include.
func TestLargeBody(t *testing.T) {
	b := newBroker(t)
	for _, tc := range []struct {
		name       string
		headers    amqp.Table
		deadLetter bool
	}{
		{name: "processed"},
		{name: "envelope", headers: amqp.Table{"h": strings.Repeat("h", 130880)}, deadLetter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := b.queue(t, "q")
			body := bytes.Repeat([]byte("0123456789"), largeBody/10)
			id := uuid.NewString()
			if tc.deadLetter {
				id = "not-a-uuid"
			}
			b.publish(t, q, amqp.Publishing{MessageId: id, Headers: tc.headers, Body: body})
			body = nil
			var got atomic.Int64
			h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				if m.Body[len(m.Body)-1] == '9' {
					got.Store(int64(len(m.Body)))
				}
				return nil
			})
			c, err := rabbitsub.New(b.url, q, h, append(fast(), consumer.WithLogger(discard()), rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(1))...)
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			peak := heapPeak()
			r := start(t, c)
			dlq := q + consumer.DeadLetterSuffix
			// Generous: under -race on a loaded 2-core machine, moving 100 MB
			// through the broker and back takes over a minute.
			waitFor(t, 3*time.Minute, "the large message was not settled", func() bool {
				return b.count(t, q) == 0 && (got.Load() == largeBody || (tc.deadLetter && b.count(t, dlq) == 1))
			})
			r.Stop(t)
			high := peak()
			runtime.ReadMemStats(&after)
			t.Logf("%s: body %d MB; heap in use before %d MB, peak %d MB (+%.1f × body); allocated %d MB (%.1f × body)",
				tc.name, largeBody/1_000_000, before.HeapInuse>>20, high>>20, float64(high-before.HeapInuse)/largeBody,
				(after.TotalAlloc-before.TotalAlloc)>>20, float64(after.TotalAlloc-before.TotalAlloc)/largeBody)
			if tc.deadLetter {
				ch, err := b.conn.Channel()
				if err != nil {
					t.Fatal(err)
				}
				defer ch.Close()
				d, ok, err := ch.Get(dlq, true)
				if err != nil || !ok || d.ContentType != rabbitsub.EnvelopeContentType || len(d.Body) < largeBody*4/3 {
					t.Fatalf("dead letter: %v %v, content type %q, %d bytes", ok, err, d.ContentType, len(d.Body))
				}
			}
		})
	}
}
