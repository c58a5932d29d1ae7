package rabbitpub_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// event is one Observer call, with a copy of the Publication at that time.
type event struct {
	kind string // "start", "retry", "done"
	pub  publisher.Publication
	err  error
	ctx  context.Context
}

type ctxMark struct{}

// recorder is an Observer that records every event and adds a traceparent
// header in PublishStart.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(kind string, ctx context.Context, p *publisher.Publication, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{kind: kind, pub: *p, err: err, ctx: ctx})
}

func (r *recorder) PublishStart(ctx context.Context, p *publisher.Publication) context.Context {
	p.SetHeader("traceparent", "00-"+p.Lineage.MessageID.String())
	p.SetHeader(lineage.HeaderMessageID, "ignored: reserved")
	r.add("start", ctx, p, nil)
	return context.WithValue(ctx, ctxMark{}, p.Lineage.MessageID)
}

func (r *recorder) PublishRetry(ctx context.Context, p *publisher.Publication, err error) {
	r.add("retry", ctx, p, err)
}

func (r *recorder) PublishDone(ctx context.Context, p *publisher.Publication, err error) {
	r.add("done", ctx, p, err)
}

func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// byMessage groups events by message ID, in order.
func byMessage(evs []event) map[string][]event {
	out := map[string][]event{}
	for _, e := range evs {
		id := e.pub.Lineage.MessageID.String()
		out[id] = append(out[id], e)
	}
	return out
}

func kinds(evs []event) string {
	s := ""
	for i, e := range evs {
		if i > 0 {
			s += ","
		}
		s += e.kind
	}
	return s
}

func TestObserverHooks(t *testing.T) {
	url := testenv.AMQPURL(t)
	ex := testenv.Name(t, "ex")
	q, ch := declareQueue(t, url)
	if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "order.*", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	p := newPublisher(t, url, rabbitpub.WithExchange(ex), publisher.WithObserver(rec))
	ctx := testenv.Context(t, 30*time.Second)

	before := time.Now()
	msg := publisher.Message{Type: "order.created", Key: []any{"o-1", 2}, Body: []byte("body")}
	if err := p.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	evs := rec.take()
	if kinds(evs) != "start,done" {
		t.Fatalf("events %q, want start,done", kinds(evs))
	}
	wantID := gen.MustID("order.created", "o-1", 2)
	for _, e := range evs {
		pb := e.pub
		if pb.System != "rabbitmq" || pb.Destination != ex || pb.RoutingKey != "order.created" ||
			string(pb.Key) != `["o-1",2]` || pb.Lineage.MessageID != wantID || pb.Lineage.CorrelationID != wantID ||
			pb.Lineage.Type != "order.created" || pb.BodySize != 4 || pb.Batch != 1 || pb.Start.Before(before) {
			t.Errorf("%s: publication %+v", e.kind, pb)
		}
	}
	if evs[0].pub.Attempts != 0 || evs[1].pub.Attempts != 1 || evs[1].err != nil {
		t.Errorf("attempts %d then %d, done err %v; want 0, 1, nil", evs[0].pub.Attempts, evs[1].pub.Attempts, evs[1].err)
	}
	if evs[1].ctx.Value(ctxMark{}) != wantID {
		t.Error("PublishDone did not get the context PublishStart returned")
	}
	// The header set in PublishStart travelled; the reserved one did not.
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if d.Headers["traceparent"] != "00-"+wantID.String() {
		t.Errorf("headers %v, want the observer's traceparent", d.Headers)
	}
	if _, ok := d.Headers[lineage.HeaderMessageID]; ok || d.MessageId != wantID.String() {
		t.Errorf("the observer overrode a reserved header: %v", d.Headers)
	}

	// A batch: Batch is the call's size, one start and one done per message;
	// the unroutable one ends with ErrUnroutable.
	batch := []publisher.Message{
		{Type: "order.paid", Key: []any{"o-1"}},
		{Type: "invoice.sent", Key: []any{"o-1"}}, // no binding
		{Type: "order.shipped", Key: []any{"o-1"}},
	}
	if err := p.PublishBatch(ctx, batch...); !errors.Is(err, publisher.ErrUnroutable) {
		t.Fatalf("PublishBatch = %v, want ErrUnroutable", err)
	}
	got := byMessage(rec.take())
	if len(got) != 3 {
		t.Fatalf("events for %d messages, want 3", len(got))
	}
	for _, m := range batch {
		id := gen.MustID(m.Type, "o-1").String()
		evs := got[id]
		if kinds(evs) != "start,done" {
			t.Errorf("%s: events %q, want start,done", m.Type, kinds(evs))
			continue
		}
		done := evs[1]
		if done.pub.Batch != 3 || done.pub.RoutingKey != m.Type || done.pub.Attempts != 1 {
			t.Errorf("%s: publication %+v", m.Type, done.pub)
		}
		if unroutable := m.Type == "invoice.sent"; errors.Is(done.err, publisher.ErrUnroutable) != unroutable || (!unroutable && done.err != nil) {
			t.Errorf("%s: done with %v", m.Type, done.err)
		}
	}

	// Invalid input is rejected before stamping: no event at all.
	if err := p.Publish(ctx, publisher.Message{Key: []any{"k"}}); !errors.Is(err, publisher.ErrInvalid) {
		t.Fatalf("Publish = %v, want ErrInvalid", err)
	}
	if evs := rec.take(); len(evs) != 0 {
		t.Errorf("events for an invalid message: %q", kinds(evs))
	}
}

// bloater is an observer whose headers make "bloat" messages unsendable.
type bloater struct{ recorder }

func (b *bloater) PublishStart(ctx context.Context, p *publisher.Publication) context.Context {
	switch p.Lineage.Type {
	case "bloat":
		p.SetHeader("pad", strings.Repeat("x", 200<<10))
	case "long-name":
		p.SetHeader(strings.Repeat("n", 256), "v")
	case "cc":
		p.SetHeader("CC", "elsewhere")
	}
	b.add("start", ctx, p, nil)
	return ctx
}

// TestObserverHeadersChecked: the headers an observer adds are checked like
// the message's own; a message they make unsendable is rejected before
// anything is sent, and every started message gets its PublishDone.
func TestObserverHeadersChecked(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	obs := &bloater{}
	p := newPublisher(t, url, toQueue(q), publisher.WithObserver(obs))
	ctx := testenv.Context(t, 20*time.Second)
	for _, typ := range []string{"bloat", "long-name", "cc"} {
		bad := publisher.Message{Type: typ, Key: []any{1}}
		if err := p.Publish(ctx, bad); !errors.Is(err, publisher.ErrInvalid) || ctx.Err() != nil {
			t.Errorf("%s: Publish = %v, want ErrInvalid", typ, err)
		}
		if err := p.PublishBatch(ctx, publisher.Message{Type: "fine", Key: []any{1}}, bad, publisher.Message{Type: "never-started", Key: []any{1}}); !errors.Is(err, publisher.ErrInvalid) {
			t.Errorf("%s: PublishBatch = %v, want ErrInvalid", typ, err)
		}
		for id, evs := range byMessage(obs.take()) {
			if k := kinds(evs); k != "start,done" && k != "start,done,start,done" {
				t.Errorf("%s: message %s observed %q, want start,done", typ, id, k)
			}
			for _, e := range evs {
				if e.kind == "done" && !errors.Is(e.err, publisher.ErrInvalid) {
					t.Errorf("%s: done with %v, want ErrInvalid", typ, e.err)
				}
			}
		}
	}
	if ids := drain(t, ch, q); len(ids) != 0 {
		t.Errorf("%d messages of rejected calls reached the queue", len(ids))
	}
}
