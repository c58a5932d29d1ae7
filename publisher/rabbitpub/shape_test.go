package rabbitpub_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// TestOversizedHeadersRejectedUpFront: a message whose content header
// cannot fit in one frame would make the broker close the connection
// (FRAME_ERROR) under every message in flight on it. It is rejected before
// anything is sent, whether or not the publisher is connected yet, and the
// publishes running beside it are not disturbed.
func TestOversizedHeadersRejectedUpFront(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	huge := publisher.Message{Type: "t", Key: []any{"huge"}, Headers: map[string]string{"big": strings.Repeat("x", 200<<10)}}

	t.Run("before connecting", func(t *testing.T) {
		ctx := testenv.Context(t, 20*time.Second)
		p := newPublisher(t, url, toQueue(q))
		var pe *publisher.PublishError
		if err := p.Publish(ctx, huge); !errors.Is(err, publisher.ErrInvalid) || errors.As(err, &pe) || ctx.Err() != nil {
			t.Fatalf("Publish = %v, want ErrInvalid before any attempt", err)
		}
		p2 := newPublisher(t, url, toQueue(q))
		if err := p2.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"ok"}}, huge); !errors.Is(err, publisher.ErrInvalid) || ctx.Err() != nil {
			t.Fatalf("PublishBatch = %v, want ErrInvalid at once", err)
		}
	})

	t.Run("beside other publishes", func(t *testing.T) {
		ctx := testenv.Context(t, 20*time.Second)
		p := newPublisher(t, url, toQueue(q), rabbitpub.WithPoolSize(2))
		if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"connect"}}); err != nil {
			t.Fatal(err)
		}
		const workers, each = 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*each+8)
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range each {
					if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{w, i}}); err != nil {
						errs <- fmt.Errorf("innocent publish: %w", err)
					}
				}
			}()
		}
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var pe *publisher.PublishError
				if err := p.Publish(ctx, huge); !errors.Is(err, publisher.ErrInvalid) || errors.As(err, &pe) {
					errs <- fmt.Errorf("oversized Publish = %v, want ErrInvalid before any attempt", err)
				}
				if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"batch-ok"}}, huge); !errors.Is(err, publisher.ErrInvalid) {
					errs <- fmt.Errorf("oversized PublishBatch = %v, want ErrInvalid", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if ctx.Err() != nil {
			t.Fatal("the oversized message was retried until the deadline")
		}
		if n := rabbitpub.Retries(p); n != 0 {
			t.Errorf("%d messages were published again: the oversized message disturbed its neighbours", n)
		}
	})
	ids := drain(t, ch, q)
	for _, id := range ids {
		if id == gen.MustID("t", "huge").String() || id == gen.MustID("t", "batch-ok").String() {
			t.Errorf("message %s of a rejected call reached the queue", id)
		}
	}
	if len(ids) != 1+4*25 {
		t.Errorf("%d messages in the queue, want %d", len(ids), 1+4*25)
	}
}

// TestTooManyHeaders: amqp091-go's reader refuses a table of more than 8192
// entries (and closes the connection of the consumer that receives it), so
// such a message is rejected before it is sent; 8192 entries, the message's
// own headers included, are accepted and read back by amqp091-go.
func TestTooManyHeaders(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	headers := func(n int) map[string]string {
		h := make(map[string]string, n)
		for i := range n {
			h[fmt.Sprintf("h%d", i)] = "v"
		}
		return h
	}
	for _, m := range []publisher.Message{
		{Type: "t", Key: []any{"k"}, Headers: headers(8192)},
		{Type: "t", Body: []byte("b"), Headers: headers(8193)},
	} {
		if err := p.Publish(ctx, m); !errors.Is(err, publisher.ErrInvalid) || !strings.Contains(err.Error(), "8192") {
			t.Errorf("Publish with %d headers = %v, want ErrInvalid naming the limit", len(m.Headers), err)
		}
		if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"fine"}}, m); !errors.Is(err, publisher.ErrInvalid) {
			t.Errorf("PublishBatch with %d headers = %v, want ErrInvalid", len(m.Headers), err)
		}
	}
	if ids := drain(t, ch, q); len(ids) != 0 {
		t.Errorf("%d messages of rejected calls reached the queue", len(ids))
	}
	// A key adds the message-key header: 8191 + 1 entries.
	ok := publisher.Message{Type: "t", Key: []any{"k"}, Headers: headers(8191)}
	if err := p.Publish(ctx, ok); err != nil {
		t.Fatalf("Publish with 8192 header entries = %v", err)
	}
	d, got, err := ch.Get(q, true)
	if err != nil || !got || len(d.Headers) != 8192 {
		t.Fatalf("amqp091-go read %v, %v, %d headers; want the message with 8192", got, err, len(d.Headers))
	}
}

// TestHugeBodyRejected: a 100 MB body is rejected before anything is sent
// (the default limit is 16 MiB), by Publish and by PublishBatch.
func TestHugeBodyRejected(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	body := make([]byte, 100<<20)
	for _, key := range [][]any{{"k"}, nil} { // with no key, the ID would hash the body
		m := publisher.Message{Type: "t", Key: key, Body: body}
		err := p.Publish(ctx, m)
		if !errors.Is(err, publisher.ErrInvalid) || !strings.Contains(err.Error(), "16777216") {
			t.Errorf("Publish of 100 MB = %v, want ErrInvalid naming the limit", err)
		}
		if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"small"}}, m); !errors.Is(err, publisher.ErrInvalid) {
			t.Errorf("PublishBatch with 100 MB = %v, want ErrInvalid", err)
		}
	}
	if ids := drain(t, ch, q); len(ids) != 0 {
		t.Errorf("%d messages of rejected calls reached the queue", len(ids))
	}
}

// TestSenderSelectedDistributionHeaders: RabbitMQ reads the CC and BCC
// headers as arrays of extra routing keys and closes the channel (406) for
// any other type; header values here are strings, so a message with either
// is rejected before it is sent.
func TestSenderSelectedDistributionHeaders(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 10*time.Second)
	for _, h := range []string{"CC", "BCC"} {
		m := publisher.Message{Type: "t", Key: []any{h}, Headers: map[string]string{h: q}}
		if err := p.Publish(ctx, m); !errors.Is(err, publisher.ErrInvalid) || !strings.Contains(err.Error(), h) {
			t.Errorf("Publish with header %s = %v, want ErrInvalid naming it", h, err)
		}
		if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"fine"}}, m); !errors.Is(err, publisher.ErrInvalid) {
			t.Errorf("PublishBatch with header %s = %v, want ErrInvalid", h, err)
		}
	}
	// Other spellings are ordinary headers.
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"cc"}, Headers: map[string]string{"cc": "x", "Bcc": "y"}}); err != nil {
		t.Errorf("Publish with headers cc and Bcc = %v", err)
	}
	if ids := drain(t, ch, q); len(ids) != 1 {
		t.Errorf("%d messages in the queue, want 1", len(ids))
	}
}
