package rabbitpub

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
)

var allocGen = forge.MustNew("orders.example.com")

// nopObserver observes nothing; it only makes the publisher do observer work.
type nopObserver struct{}

func (nopObserver) PublishStart(ctx context.Context, _ *publisher.Publication) context.Context {
	return ctx
}
func (nopObserver) PublishRetry(context.Context, *publisher.Publication, error) {}
func (nopObserver) PublishDone(context.Context, *publisher.Publication, error)  {}

func allocPublisher(t testing.TB, opts ...publisher.Option) *Publisher {
	t.Helper()
	p, err := New("amqp://guest:guest@127.0.0.1:5672/", allocGen, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var allocMsg = publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`),
	Headers: map[string]string{"tenant": "acme"}}

// TestNoObserverNoAllocation: without an observer, what Publish and
// PublishBatch do around prepare before the first attempt (begin) and
// after it (retry and done events) allocates nothing; prepare allocates only
// the publishing's own parts on top of stamping the message. With an
// observer, begin does allocate, which shows the measurement works.
func TestNoObserverNoAllocation(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	p := allocPublisher(t)
	m, err := p.prepare(ctx, &allocMsg, now)
	if err != nil {
		t.Fatal(err)
	}
	hooks := func(p *Publisher) float64 {
		m2 := new(prepared) // on the heap in Publish and PublishBatch too
		return testing.AllocsPerRun(200, func() {
			*m2 = m
			var limit int
			o, err := p.begin(ctx, m2, 1, now, &limit)
			if err != nil {
				t.Fatal(err)
			}
			o.retry(nil)
			o.done(nil)
		})
	}
	if n := hooks(p); n != 0 {
		t.Errorf("without an observer, begin/retry/done allocate %v times per message, want 0", n)
	}
	if n := hooks(allocPublisher(t, publisher.WithObserver(nopObserver{}))); n == 0 {
		t.Errorf("with an observer, begin allocates nothing: the measurement is broken")
	}

	// prepare = Stamp + what the publishing itself needs: the header table
	// (a map and its first group), each header value boxed into the table
	// (the tenant header and the message-key header: the key of a single
	// string part is that string, not a copy), and the message and
	// correlation ID strings. The message also escapes to the heap (the
	// routing key function receives it). The body is never copied.
	stamp := testing.AllocsPerRun(200, func() {
		msg := allocMsg
		if _, err := publisher.Stamp(ctx, allocGen, &msg, DefaultMaxBodySize); err != nil {
			t.Fatal(err)
		}
	})
	prep := testing.AllocsPerRun(200, func() {
		msg := allocMsg
		if _, err := p.prepare(ctx, &msg, now); err != nil {
			t.Fatal(err)
		}
	})
	own := float64(2 + (len(allocMsg.Headers) + 1) + 2 + 1)
	if prep-stamp > own {
		t.Errorf("prepare allocates %v times, stamping %v: %v of its own, want at most %v", prep, stamp, prep-stamp, own)
	}
	t.Logf("prepare: %v allocations, of which stamping %v", prep, stamp)
}

// TestPrepareDoesNotCopyTheBody: the publishing refers to the caller's body.
func TestPrepareDoesNotCopyTheBody(t *testing.T) {
	p := allocPublisher(t)
	body := make([]byte, 8<<20)
	for _, key := range [][]any{{"k"}, nil} {
		msg := publisher.Message{Type: "t", Key: key, Body: body}
		m, err := p.prepare(context.Background(), &msg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if &m.pub.Body[0] != &body[0] {
			t.Errorf("key %v: prepare copied the body", key)
		}
	}
}

// BenchmarkBegin measures the per-message work around prepare, with and
// without an observer (allocs/op: 0 without).
func BenchmarkBegin(b *testing.B) {
	ctx := context.Background()
	now := time.Now()
	for name, opts := range map[string][]publisher.Option{
		"no-observer": nil,
		"observer":    {publisher.WithObserver(nopObserver{})},
	} {
		b.Run(name, func(b *testing.B) {
			p := allocPublisher(b, opts...)
			b.ReportAllocs()
			for b.Loop() {
				msg := allocMsg
				m, err := p.prepare(ctx, &msg, now)
				if err != nil {
					b.Fatal(err)
				}
				var limit int
				o, err := p.begin(ctx, &m, 1, now, &limit)
				if err != nil {
					b.Fatal(err)
				}
				o.done(nil)
			}
		})
	}
}

// TestPublishAllocatesOnlyPrepareAndAttempt: without an observer, Publish
// allocates nothing beyond preparing the message and making one attempt
// (the driver's publish and the confirm wait), measured on a real broker.
func TestPublishAllocatesOnlyPrepareAndAttempt(t *testing.T) {
	url := testenv.AMQPURL(t)
	c, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "q")
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	p, err := New(url, allocGen, WithQueue(q), WithTransient())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.Publish(ctx, allocMsg); err != nil { // connect
		t.Fatal(err)
	}
	const runs = 200
	publish := testing.AllocsPerRun(runs, func() {
		if err := p.Publish(ctx, allocMsg); err != nil {
			t.Fatal(err)
		}
	})
	prepare := testing.AllocsPerRun(runs, func() {
		msg := allocMsg
		if _, err := p.prepare(ctx, &msg, time.Now()); err != nil {
			t.Fatal(err)
		}
	})
	m, err := p.prepare(ctx, &allocMsg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	attempt := testing.AllocsPerRun(runs, func() {
		if err := p.publishOne(ctx, &m); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Publish: %v allocations; prepare %v + one attempt %v", publish, prepare, attempt)
	if publish > prepare+attempt {
		t.Errorf("Publish allocates %v times, more than prepare (%v) and one attempt (%v)", publish, prepare, attempt)
	}
}

// FuzzKeyHeader: the message-key header is exactly publisher.KeyBytes of
// the key, whatever its parts.
func FuzzKeyHeader(f *testing.F) {
	f.Add("o-1001", int64(12345), []byte{0, 1, 0xff}, uint8(0))
	f.Add("", int64(-1), []byte(nil), uint8(1))
	f.Add("\xff\"", int64(1<<53-1), []byte("x"), uint8(2))
	f.Fuzz(func(t *testing.T, s string, n int64, b []byte, shape uint8) {
		var key []any
		switch shape % 4 {
		case 0:
			key = []any{s}
		case 1:
			key = []any{b}
		case 2:
			key = []any{s, n}
		default:
			key = []any{n, b, s}
		}
		want, werr := publisher.KeyBytes(key)
		got, gerr := keyHeader(key)
		if (werr == nil) != (gerr == nil) || got != string(want) {
			t.Fatalf("keyHeader(%#v) = %q, %v; KeyBytes = %q, %v", key, got, gerr, want, werr)
		}
	})
}
