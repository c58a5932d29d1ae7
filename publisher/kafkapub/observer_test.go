package kafkapub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// hookEvent is one call of a publisher.Observer method.
type hookEvent struct {
	kind string // "start", "retry", "done"
	pub  publisher.Publication
	err  error
	at   time.Time
}

type markKey struct{}

// hooks records every call and checks that PublishRetry and PublishDone
// get the context PublishStart returned. PublishStart adds the header
// x-trace ("span-" and the message ID) and tries to overwrite message-id.
type hooks struct {
	t      *testing.T
	mu     sync.Mutex
	events map[uuid.UUID][]hookEvent
}

func newHooks(t *testing.T) *hooks { return &hooks{t: t, events: map[uuid.UUID][]hookEvent{}} }

func (h *hooks) add(ctx context.Context, kind string, p *publisher.Publication, err error) {
	if kind != "start" {
		if mark, _ := ctx.Value(markKey{}).(uuid.UUID); mark != p.Lineage.MessageID {
			h.t.Errorf("%s of %s: context from PublishStart of %v", kind, p.Lineage.MessageID, mark)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events[p.Lineage.MessageID] = append(h.events[p.Lineage.MessageID], hookEvent{kind: kind, pub: *p, err: err, at: time.Now()})
}

func (h *hooks) PublishStart(ctx context.Context, p *publisher.Publication) context.Context {
	p.SetHeader("x-trace", "span-"+p.Lineage.MessageID.String())
	p.SetHeader(lineage.HeaderMessageID, "forged") // reserved: ignored
	h.add(ctx, "start", p, nil)
	return context.WithValue(ctx, markKey{}, p.Lineage.MessageID)
}

func (h *hooks) PublishRetry(ctx context.Context, p *publisher.Publication, err error) {
	h.add(ctx, "retry", p, err)
}

func (h *hooks) PublishDone(ctx context.Context, p *publisher.Publication, err error) {
	h.add(ctx, "done", p, err)
}

// of returns the events of message id.
func (h *hooks) of(id uuid.UUID) []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookEvent(nil), h.events[id]...)
}

// kinds returns the kinds of evs, e.g. "start retry done".
func kinds(evs []hookEvent) string {
	var b bytes.Buffer
	for i, e := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.kind)
	}
	return b.String()
}

// TestObserverHooks: Publish, PublishBatch and concurrent Publish calls
// (which share produce requests) each give every message one PublishStart
// and one PublishDone with what the message is, and the header the
// observer set travels with the record.
func TestObserverHooks(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	h := newHooks(t)
	p := newPublisher(t, brokers, topic, publisher.WithObserver(h))
	ctx := testenv.Context(t, 30*time.Second)
	body := []byte(`{"total":1234}`)
	msg := func(key string) publisher.Message {
		return publisher.Message{Type: "order.created", Key: []any{key}, Body: body}
	}
	before := time.Now()
	if err := p.Publish(ctx, msg("single")); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishBatch(ctx, msg("batch-0"), msg("batch-1"), msg("batch-2")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			if err := p.Publish(ctx, msg(fmt.Sprint("concurrent-", g))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	want := map[string]int{"single": 1, "batch-0": 3, "batch-1": 3, "batch-2": 3} // key -> Batch
	for g := range 16 {
		want[fmt.Sprint("concurrent-", g)] = 1
	}
	stored := map[string]record{}
	for _, r := range readWithKcat(t, brokers, topic) {
		stored[r.header(lineage.HeaderMessageID)] = r
	}
	for key, batch := range want {
		id := gen.MustID("order.created", key)
		evs := h.of(id)
		if kinds(evs) != "start done" {
			t.Errorf("%s: hooks %q, want \"start done\"", key, kinds(evs))
			continue
		}
		pub := evs[1].pub
		wantKey, _ := publisher.KeyBytes([]any{key})
		switch {
		case pub.System != "kafka" || pub.Destination != topic || pub.RoutingKey != "":
			t.Errorf("%s: system %q, destination %q, routing key %q", key, pub.System, pub.Destination, pub.RoutingKey)
		case !bytes.Equal(pub.Key, wantKey):
			t.Errorf("%s: key %q, want %q", key, pub.Key, wantKey)
		case pub.Lineage != (lineage.Lineage{MessageID: id, CorrelationID: id, Type: "order.created"}):
			t.Errorf("%s: lineage %+v", key, pub.Lineage)
		case pub.BodySize != len(body) || pub.Batch != batch || pub.Attempts != 1:
			t.Errorf("%s: body size %d, batch %d, attempts %d; want %d, %d, 1", key, pub.BodySize, pub.Batch, pub.Attempts, len(body), batch)
		case pub.Start.Before(before) || pub.Start.After(evs[0].at) || evs[1].err != nil:
			t.Errorf("%s: start %v (call after %v, PublishStart at %v), result %v", key, pub.Start, before, evs[0].at, evs[1].err)
		}
		r, ok := stored[id.String()]
		if !ok {
			t.Errorf("%s: record %s not in the topic", key, id)
			continue
		}
		if got := r.header("x-trace"); got != "span-"+id.String() {
			t.Errorf("%s: x-trace header %q, want the observer's", key, got)
		}
	}
	if len(stored) != len(want) {
		t.Errorf("%d records stored, want %d (the observer must not change the message ID)", len(stored), len(want))
	}
}

// TestObserverRetries: while the broker is down, each retried message gets
// PublishRetry with the failed attempt's error and count, then one
// PublishDone once it is stored — on Publish and on PublishBatch.
func TestObserverRetries(t *testing.T) {
	k := testenv.InProcessKafka(t, testenv.KafkaPorts(freePort(t)))
	topic := testenv.Name(t, "topic")
	h := newHooks(t)
	p := newPublisher(t, k.Brokers(), topic, publisher.WithObserver(h), publisher.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"before"}}); err != nil {
		t.Fatal(err)
	}
	k.Close()
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		restarted <- k.Restart()
	}()
	errs := make(chan error, 2)
	go func() { errs <- p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"single"}}) }()
	go func() {
		errs <- p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"batch-1"}}, publisher.Message{Type: "t", Key: []any{"batch-2"}})
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("publish across restart: %v", err)
		}
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"single", "batch-1", "batch-2"} {
		evs := h.of(gen.MustID("t", key))
		if len(evs) < 3 || evs[0].kind != "start" || evs[len(evs)-1].kind != "done" {
			t.Errorf("%s: hooks %q, want start, retries, done", key, kinds(evs))
			continue
		}
		for i, e := range evs[1 : len(evs)-1] {
			if e.kind != "retry" || e.err == nil || e.pub.Attempts != i+1 {
				t.Errorf("%s: event %d: %s after %d attempts (%v), want a retry after %d with its error", key, i+1, e.kind, e.pub.Attempts, e.err, i+1)
			}
		}
		if done := evs[len(evs)-1]; done.err != nil || done.pub.Attempts != len(evs)-1 {
			t.Errorf("%s: done after %d attempts with %v, want nil after %d", key, done.pub.Attempts, done.err, len(evs)-1)
		}
	}
}

// TestObserverFailure: a message never stored gets PublishDone with the
// error Publish returns; an invalid one gets no hook at all (nothing was
// stamped or sent).
func TestObserverFailure(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there
	h := newHooks(t)
	p, err := kafkapub.New([]string{addr}, "t", gen, publisher.WithObserver(h))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
	evs := h.of(gen.MustID("t", "k"))
	if len(evs) < 2 || evs[0].kind != "start" || evs[len(evs)-1].kind != "done" {
		t.Fatalf("hooks %q, want start, retries, done", kinds(evs))
	}
	var pe *publisher.PublishError
	done := evs[len(evs)-1]
	if !errors.As(done.err, &pe) || done.err != err || done.pub.Attempts != pe.Attempts {
		t.Errorf("done with %v after %d attempts; Publish returned %v", done.err, done.pub.Attempts, err)
	}

	if err := p.PublishBatch(context.Background(), publisher.Message{Type: "t", Key: []any{"valid"}},
		publisher.Message{Type: "t", Key: []any{"bad"}, RoutingKey: "not on Kafka"}); !errors.Is(err, publisher.ErrInvalid) {
		t.Fatalf("PublishBatch = %v, want ErrInvalid", err)
	}
	if evs := h.of(gen.MustID("t", "valid")); len(evs) != 0 {
		t.Errorf("hooks %q for a batch that was rejected", kinds(evs))
	}
}
