package rabbitpub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// fullQueue declares a queue that holds one message and makes the broker
// nack every publish beyond it (x-overflow: reject-publish).
func fullQueue(t *testing.T, url string) (string, *amqp.Channel) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "full")
	if _, err := ch.QueueDeclare(q, false, true, false, false, amqp.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	return q, ch
}

// get takes one message from q, or returns "" when it is empty.
func get(t *testing.T, ch *amqp.Channel, q string) string {
	t.Helper()
	d, ok, err := ch.Get(q, true)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !ok {
		return ""
	}
	return d.MessageId
}

// waitFor polls cond until it holds or the test's patience ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNackedMessageIsNotPublished: a message the broker nacks (its queue is
// full) is not reported as published; it is published again, and succeeds
// once the queue has room.
func TestNackedMessageIsNotPublished(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := fullQueue(t, url)
	rec := &recorder{}
	p := newPublisher(t, url, toQueue(q), publisher.WithBackoff(5*time.Millisecond, 20*time.Millisecond), publisher.WithObserver(rec))
	ctx := testenv.Context(t, 60*time.Second)

	first := publisher.Message{Type: "t", Key: []any{"first"}}
	if err := p.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	rec.take()

	// The queue is full: single and batch publishes are nacked, retried,
	// and fail when their context ends; none is reported as published.
	short, cancel := withTimeout(ctx, 300*time.Millisecond)
	err := p.Publish(short, publisher.Message{Type: "t", Key: []any{"nacked"}})
	cancel()
	var pe *publisher.PublishError
	if err == nil || !errors.As(err, &pe) || pe.Attempts < 2 || !strings.Contains(err.Error(), "nack") || !errors.Is(err, errDeadline) {
		t.Fatalf("Publish into a full queue = %v, want a deadline error after several nacked attempts", err)
	}
	short, cancel = withTimeout(ctx, 300*time.Millisecond)
	err = p.PublishBatch(short, publisher.Message{Type: "t", Key: []any{"nacked-1"}}, publisher.Message{Type: "t", Key: []any{"nacked-2"}})
	cancel()
	if n := strings.Count(errString(err), "nack"); n != 2 || !errors.Is(err, errDeadline) {
		t.Fatalf("PublishBatch into a full queue = %v, want two nacked messages", err)
	}
	// The last attempt of each may still have been with the broker when
	// its context ended (a publish that returned an error may still be
	// stored: at-least-once); wait until the broker has refused it too.
	if err := rabbitpub.Settle(p); err != nil {
		t.Fatal(err)
	}
	evs := byMessage(rec.take())
	if e := evs[gen.MustID("t", "nacked").String()]; len(e) < 3 || e[1].kind != "retry" || !strings.Contains(errString(e[1].err), "nack") ||
		e[len(e)-1].kind != "done" || e[len(e)-1].err == nil {
		t.Errorf("observed %q for the nacked message, want start,retry...,done with an error", kinds(e))
	}
	if id := get(t, ch, q); id != gen.MustID("t", "first").String() {
		t.Fatalf("queue head %q, want the first message", id)
	}
	if id := get(t, ch, q); id != "" {
		t.Fatalf("a nacked message reached the queue: %s", id)
	}

	// Full again; a publish keeps being nacked until a consumer makes room,
	// then it is published.
	if err := p.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	rec.take()
	before := rabbitpub.Retries(p)
	later := publisher.Message{Type: "t", Key: []any{"later"}}
	done := make(chan error, 1)
	go func() { done <- p.Publish(ctx, later) }()
	waitFor(t, "a nack", func() bool { return rabbitpub.Retries(p) > before })
	get(t, ch, q) // room for one
	if err := <-done; err != nil {
		t.Fatalf("Publish once the queue had room = %v", err)
	}
	if id := get(t, ch, q); id != gen.MustID("t", "later").String() {
		t.Fatalf("queue holds %q, want the message published after the nacks", id)
	}
	e := byMessage(rec.take())[gen.MustID("t", "later").String()]
	if len(e) < 3 || e[1].kind != "retry" || e[len(e)-1].kind != "done" || e[len(e)-1].err != nil || e[len(e)-1].pub.Attempts != len(e)-1 {
		t.Errorf("observed %q for the retried message, want start,retry...,done(nil) counting every attempt", kinds(e))
	}

	// The same for a batch: each nacked message is published again until
	// it gets in.
	if err := p.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	var got []string
	batchDone := make(chan error, 1)
	before = rabbitpub.Retries(p)
	go func() {
		batchDone <- p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"b1"}}, publisher.Message{Type: "t", Key: []any{"b2"}})
	}()
	waitFor(t, "a nack", func() bool { return rabbitpub.Retries(p) > before })
	for finished := false; !finished; {
		select {
		case err := <-batchDone:
			if err != nil {
				t.Fatalf("PublishBatch once the queue had room = %v", err)
			}
			finished = true
		case <-time.After(20 * time.Millisecond):
		}
		if id := get(t, ch, q); id != "" {
			got = append(got, id)
		}
	}
	if id := get(t, ch, q); id != "" {
		got = append(got, id)
	}
	want := map[string]bool{gen.MustID("t", "b1").String(): true, gen.MustID("t", "b2").String(): true}
	for _, id := range got {
		delete(want, id)
	}
	if len(want) != 0 {
		t.Fatalf("after the batch returned nil, the queue had delivered %v; missing %v", got, want)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// freezer freezes a frameProxy at the first retry.
type freezer struct {
	recorder
	proxy *frameProxy
}

func (f *freezer) PublishRetry(ctx context.Context, p *publisher.Publication, err error) {
	f.proxy.freeze(true)
	f.recorder.PublishRetry(ctx, p, err)
}

// TestNackNamedWhenTheContextEndsLater: a message nacked, then cut off by
// its context while waiting for the next confirm, reports the nack as its
// last real failure, from Publish and from PublishBatch alike.
func TestNackNamedWhenTheContextEndsLater(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, _ := fullQueue(t, url)
	proxy, proxyURL := startProxy(t, url)
	defer proxy.freeze(false)
	f := &freezer{proxy: proxy}
	p := newPublisher(t, proxyURL, toQueue(q), publisher.WithObserver(f), publisher.WithBackoff(time.Millisecond, time.Millisecond))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"fill"}}); err != nil {
		t.Fatal(err)
	}
	for name, publish := range map[string]func(contextT) error{
		"Publish":      func(c contextT) error { return p.Publish(c, publisher.Message{Type: "t", Key: []any{"single"}}) },
		"PublishBatch": func(c contextT) error { return p.PublishBatch(c, publisher.Message{Type: "t", Key: []any{"batch"}}) },
	} {
		proxy.freeze(false)
		short, cancel := withTimeout(ctx, 500*time.Millisecond)
		err := publish(short)
		cancel()
		if !errors.Is(err, errDeadline) || !strings.Contains(errString(err), "nack") {
			t.Errorf("%s = %v, want a deadline error naming the nack", name, err)
		}
	}
}
