package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// faulty wraps a real publisher to inject failures: a message for which
// fail returns an error is not sent and is reported failed; the others go
// through the real publisher; a sent message for which lose returns true
// is reported failed all the same, as when a confirm is lost.
type faulty struct {
	publisher.Publisher
	fail func(m publisher.Message) error
	lose func(m publisher.Message) bool
}

var errConfirmLost = errors.New("faulty: confirm lost")

func (f *faulty) Publish(ctx context.Context, m publisher.Message) error {
	return f.PublishBatch(ctx, m)
}

func (f *faulty) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	var send []publisher.Message
	var errs []error
	for _, m := range msgs {
		if f.fail != nil {
			if err := f.fail(m); err != nil {
				errs = append(errs, &publisher.PublishError{Transport: "faulty", MessageID: m.ID, Attempts: 1, Err: err})
				continue
			}
		}
		send = append(send, m)
	}
	if err := f.Publisher.PublishBatch(ctx, send...); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, m := range send {
		if f.lose != nil && f.lose(m) {
			errs = append(errs, &publisher.PublishError{Transport: "faulty", MessageID: m.ID, Attempts: 1, Err: errConfirmLost})
		}
	}
	return errors.Join(errs...)
}

// TestRelayRabbitMQ: every record reaches RabbitMQ with exactly the IDs,
// type, body and headers it was stored with, and is marked dispatched.
func TestRelayRabbitMQ(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	p := newPublisher(t, s, "orders")
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New()}
	ctx := testenv.Context(t, 60*time.Second)
	msgs := []publisher.Message{
		{Type: "order.placed", Key: []any{"SO-1"}, Body: []byte(`{"total":12}`), Headers: map[string]string{"tenant": "acme"}},
		{Type: "order.paid", Key: []any{"SO-1"}, Body: []byte("paid")},
		{Type: "invoice.issued", Key: []any{"EUR", 12345}, Body: []byte("inv")},
		{Type: "note.added", Body: []byte("no key")},
	}
	enqueue(t, pool, p, msgs...)
	child := publisher.Message{Type: "shipment.requested", Key: []any{"SO-1"}, Body: []byte("child")}
	if err := pgxBegin(ctx, pool, func(c context.Context) error { return p.Publish(lineage.NewContext(c, parent), child) }); err != nil {
		t.Fatal(err)
	}
	runRelay(t, s, map[string]publisher.Publisher{"orders": rb.publisher(t)})
	got := collect(t, ds, 5, 30*time.Second)
	byID := map[string]int{}
	for i, d := range got {
		byID[d.MessageId] = i
	}
	for i, m := range append(msgs, child) {
		mctx := context.Background()
		if i == len(msgs) {
			mctx = lineage.NewContext(mctx, parent)
		}
		mm := m
		want, err := publisher.IDs(mctx, gen, &mm)
		if err != nil {
			t.Fatal(err)
		}
		j, ok := byID[want.MessageID.String()]
		if !ok {
			t.Errorf("%s: message %s not received", m.Type, want.MessageID)
			continue
		}
		d := got[j]
		if d.CorrelationId != want.CorrelationID.String() || d.Type != m.Type || string(d.Body) != string(m.Body) {
			t.Errorf("%s: received %+v, want IDs %+v", m.Type, d, want)
		}
		if c, _ := d.Headers[lineage.HeaderCausationID].(string); want.CausationID != uuid.Nil && c != want.CausationID.String() {
			t.Errorf("%s: causation %q, want %s", m.Type, c, want.CausationID)
		}
		for k, v := range m.Headers {
			if d.Headers[k] != v {
				t.Errorf("%s: header %q = %v, want %q", m.Type, k, d.Headers[k], v)
			}
		}
	}
	// Messages of one key arrive in the order they were enqueued.
	if a, b, c := byID[idOf(t, msgs[0]).String()], byID[idOf(t, msgs[1]).String()], byID[want(t, parent, child)]; !(a < b && b < c) {
		t.Errorf("SO-1's messages arrived at positions %d, %d, %d", a, b, c)
	}
	waitFor(t, 10*time.Second, "every row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == 5 })
}

func want(t testing.TB, parent lineage.Lineage, m publisher.Message) string {
	t.Helper()
	l, err := publisher.IDs(lineage.NewContext(context.Background(), parent), gen, &m)
	if err != nil {
		t.Fatal(err)
	}
	return l.MessageID.String()
}

// TestRelayKafka: the same through Kafka, where the record key is the
// stored key's wire form, so one key's records share a partition, in order.
func TestRelayKafka(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	k := newKafka(t)
	p := newPublisher(t, s, "events")
	var msgs []publisher.Message
	for i := range 30 {
		msgs = append(msgs, publisher.Message{Type: fmt.Sprintf("step.%02d", i), Key: []any{fmt.Sprintf("K%d", i%3)},
			Body: []byte{byte(i)}, Headers: map[string]string{"i": fmt.Sprint(i)}})
	}
	enqueue(t, pool, p, msgs...)
	runRelay(t, s, map[string]publisher.Publisher{"events": k.publisher(t)})
	recs := k.read(t, len(msgs), 60*time.Second)
	last := map[string]int{}
	for _, r := range recs {
		var i int
		fmt.Sscan(header(r, "i"), &i)
		m := msgs[i]
		l, _ := publisher.IDs(context.Background(), gen, &m)
		if header(r, lineage.HeaderMessageID) != l.MessageID.String() || header(r, lineage.HeaderCorrelationID) != l.CorrelationID.String() ||
			header(r, lineage.HeaderMessageType) != m.Type || string(r.Key) != m.Key[0].(string) || len(r.Value) != 1 || r.Value[0] != byte(i) {
			t.Errorf("record %d: key %q headers %v", i, r.Key, r.Headers)
		}
		if prev, ok := last[string(r.Key)]; ok && prev > i {
			t.Errorf("key %s: message %d after %d", r.Key, i, prev)
		}
		last[string(r.Key)] = i
	}
	waitFor(t, 10*time.Second, "every row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == len(msgs) })
}

// TestRelayDead: an unroutable or invalid record moves to the dead state
// with its reason, without holding up the others (of its key too); a
// redrive publishes it once the cause is fixed.
func TestRelayDead(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	k := newKafka(t)
	ctx := testenv.Context(t, 60*time.Second)
	lost := testenv.Name(t, "lost")
	rp := newPublisher(t, s, "rabbit")
	kp := newPublisher(t, s, "kafka")
	unroutable := publisher.Message{Type: "a.unroutable", Key: []any{"A"}, Body: []byte("1"), RoutingKey: lost}
	enqueue(t, pool, rp, unroutable, msg("a.next", "A"), msg("b.fine", "B"))
	// A routing key means nothing on Kafka: the Kafka publisher refuses
	// the whole batch, the relay finds the culprit.
	invalid := publisher.Message{Type: "k.invalid", Key: []any{"A"}, Body: []byte("2"), RoutingKey: "x"}
	enqueue(t, pool, kp, msg("k.first", "A"), invalid, msg("k.next", "A"), msg("k.other", "B"))
	runRelay(t, s, map[string]publisher.Publisher{"rabbit": rb.publisher(t), "kafka": k.publisher(t)})

	got := collect(t, ds, 2, 30*time.Second)
	if names := got[0].Type + " " + got[1].Type; names != "a.next b.fine" && names != "b.fine a.next" {
		t.Fatalf("RabbitMQ received %s", names)
	}
	recs := k.read(t, 3, 60*time.Second)
	var ka []string
	for _, r := range recs {
		if string(r.Key) == "A" {
			ka = append(ka, header(r, lineage.HeaderMessageType))
		}
	}
	if strings.Join(ka, " ") != "k.first k.next" {
		t.Errorf("Kafka received %v for key A, want k.first k.next", ka)
	}
	waitFor(t, 10*time.Second, "two dead rows", func() bool { return countRows(t, pool, s, outbox.Dead) == 2 })
	dead, err := s.Dead(ctx, "", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if dead[0].Type != "a.unroutable" || !strings.Contains(dead[0].LastError, "unroutable") {
		t.Errorf("dead %s: %q", dead[0].Type, dead[0].LastError)
	}
	if dead[1].Type != "k.invalid" || !strings.Contains(dead[1].LastError, "routing key") {
		t.Errorf("dead %s: %q", dead[1].Type, dead[1].LastError)
	}
	// Fix the cause (bind a queue for the routing key) and redrive.
	if _, err := rb.ch.QueueDeclare(lost, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteQueue(t, rb, lost) })
	if _, err := s.Redrive(ctx, dead[0].Seq); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the redriven row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == 6 })
	m, ok, err := rb.ch.Get(lost, true)
	if err != nil || !ok || m.MessageId != dead[0].ID.String() {
		t.Fatalf("redriven message: %v %v %s, want %s", ok, err, m.MessageId, dead[0].ID)
	}
}

// TestRelayRetry: a record that keeps failing backs off on its own: the
// other keys flow meanwhile, the later records of its key wait for it, and
// once it succeeds they follow in order.
func TestRelayRetry(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	p := newPublisher(t, s, "d")
	var broken atomic.Bool
	broken.Store(true)
	failing := idOf(t, msg("k.1", "K"))
	pub := &faulty{Publisher: rb.publisher(t), fail: func(m publisher.Message) error {
		if broken.Load() && m.ID == failing {
			return errors.New("broker hiccup")
		}
		return nil
	}}
	var failed, dispatched atomic.Int64
	obs := observerFuncs{
		dispatched: func(*outbox.Record) { dispatched.Add(1) },
		failed: func(r *outbox.Record, err error, dead bool) {
			if r.ID != failing || dead || !strings.Contains(err.Error(), "broker hiccup") {
				t.Errorf("Failed(%s, %v, dead %v)", r.Type, err, dead)
			}
			failed.Add(1)
		},
	}
	enqueue(t, pool, p, msg("k.1", "K"), msg("a.1", "A"), msg("k.2", "K"), msg("b.1", "B"), msg("k.3", "K"), msg("a.2", "A"))
	runRelay(t, s, map[string]publisher.Publisher{"d": pub}, outbox.WithObserver(obs))
	got := collect(t, ds, 3, 30*time.Second)
	var names []string
	for _, d := range got {
		names = append(names, d.Type)
	}
	if strings.Join(names, " ") != "a.1 b.1 a.2" && strings.Join(names, " ") != "a.1 a.2 b.1" && strings.Join(names, " ") != "b.1 a.1 a.2" {
		t.Fatalf("while K fails, received %v", names)
	}
	waitFor(t, 10*time.Second, "two failed attempts", func() bool { return failed.Load() >= 2 })
	quiet(t, ds, 300*time.Millisecond) // k.2 and k.3 wait for k.1
	r, err := s.Lookup(testenv.Context(t, 10*time.Second), "d", failing)
	if err != nil || r.Attempts < 2 || !strings.Contains(r.LastError, "broker hiccup") || r.State != outbox.Pending {
		t.Fatalf("failing record %+v, %v", r, err)
	}
	broken.Store(false)
	got = collect(t, ds, 3, 30*time.Second)
	if names := got[0].Type + " " + got[1].Type + " " + got[2].Type; names != "k.1 k.2 k.3" {
		t.Fatalf("after recovery received %s, want k.1 k.2 k.3", names)
	}
	waitFor(t, 10*time.Second, "6 dispatched", func() bool { return dispatched.Load() == 6 })
}

// TestRelayMaxAttempts: with WithMaxAttempts a record that keeps failing
// dies after that many attempts, and its key's next records go on.
func TestRelayMaxAttempts(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	failing := idOf(t, msg("k.1", "K"))
	pub := &faulty{Publisher: rb.publisher(t), fail: func(m publisher.Message) error {
		if m.ID == failing {
			return errors.New("always")
		}
		return nil
	}}
	enqueue(t, pool, newPublisher(t, s, "d"), msg("k.1", "K"), msg("k.2", "K"))
	runRelay(t, s, map[string]publisher.Publisher{"d": pub}, outbox.WithMaxAttempts(3))
	if got := collect(t, ds, 1, 30*time.Second); got[0].Type != "k.2" {
		t.Fatalf("received %s", got[0].Type)
	}
	waitFor(t, 10*time.Second, "k.1 dead", func() bool { return countRows(t, pool, s, outbox.Dead) == 1 })
	r, _ := s.Lookup(testenv.Context(t, 10*time.Second), "d", failing)
	if r.Attempts != 3 || !strings.Contains(r.LastError, "3 failed attempts") || !strings.Contains(r.LastError, "always") {
		t.Fatalf("dead record %+v", r)
	}
}

// TestRelayWakesOnNotify: a new record is published at once although the
// poll interval is a minute: the enqueue's notification wakes the relay.
func TestRelayWakesOnNotify(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	runRelay(t, s, map[string]publisher.Publisher{"d": rb.publisher(t)}, outbox.WithPollInterval(time.Minute))
	time.Sleep(300 * time.Millisecond) // the workers' first claims found nothing; they sleep
	for i := range 3 {
		enqueue(t, pool, newPublisher(t, s, "d"), msg("m", fmt.Sprint(i)))
		collect(t, ds, 1, 20*time.Second)
	}
}

// TestRelayStops: Run returns after its batches finish, and a publisher
// that is closed releases the records unchanged instead of failing them.
func TestRelayStops(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	pub := rb.publisher(t)
	_ = pub.Close()
	enqueue(t, pool, newPublisher(t, s, "d"), msg("a", "1"), msg("b", "2"))
	stop := runRelay(t, s, map[string]publisher.Publisher{"d": pub})
	time.Sleep(300 * time.Millisecond)
	stop()
	r, err := s.Lookup(testenv.Context(t, 10*time.Second), "d", idOf(t, msg("a", "1")))
	if err != nil || r.State != outbox.Pending || r.Attempts != 0 {
		t.Fatalf("record after a closed publisher: %+v, %v", r, err)
	}
	// The records are published by the next relay.
	ds := rb.consume(t)
	runRelay(t, s, map[string]publisher.Publisher{"d": rb.publisher(t)})
	collect(t, ds, 2, 30*time.Second)
}

func TestNewRelay(t *testing.T) {
	s, err := pgoutbox.New(newPool(t))
	if err != nil {
		t.Fatal(err)
	}
	rp := &faulty{}
	cases := map[string]struct {
		store outbox.Store
		pubs  map[string]publisher.Publisher
		opts  []outbox.Option
	}{
		"nil store":       {nil, map[string]publisher.Publisher{"d": rp}, nil},
		"no publishers":   {s, nil, nil},
		"nil publisher":   {s, map[string]publisher.Publisher{"d": nil}, nil},
		"bad destination": {s, map[string]publisher.Publisher{"": rp}, nil},
		"batch size":      {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithBatchSize(0)}},
		"workers":         {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithWorkers(0)}},
		"poll":            {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithPollInterval(0)}},
		"publish timeout": {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithPublishTimeout(-1)}},
		"backoff order":   {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithBackoff(2, 1)}},
		"backoff zero":    {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithBackoff(0, 1)}},
		"max attempts":    {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithMaxAttempts(0)}},
		"nil observer":    {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithObserver(nil)}},
		"nil logger":      {s, map[string]publisher.Publisher{"d": rp}, []outbox.Option{outbox.WithLogger(nil)}},
	}
	for name, tc := range cases {
		if _, err := outbox.NewRelay(tc.store, tc.pubs, tc.opts...); err == nil || !strings.HasPrefix(err.Error(), "outbox: ") {
			t.Errorf("%s: NewRelay = %v, want an outbox error", name, err)
		}
	}
	r, err := outbox.NewRelay(s, map[string]publisher.Publisher{"d": rp}, outbox.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if err := r.Run(ctx); !errors.Is(err, outbox.ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	<-done
}

// observerFuncs is an outbox.Observer made of functions.
type observerFuncs struct {
	dispatched func(*outbox.Record)
	failed     func(*outbox.Record, error, bool)
}

func (o observerFuncs) Dispatched(_ context.Context, r *outbox.Record) {
	if o.dispatched != nil {
		o.dispatched(r)
	}
}

func (o observerFuncs) Failed(_ context.Context, r *outbox.Record, err error, dead bool) {
	if o.failed != nil {
		o.failed(r, err, dead)
	}
}

// TestRolledBackAndTwice: a message whose transaction rolled back is never
// published; a message enqueued twice (a retried request) is published
// once.
func TestRolledBackAndTwice(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	runRelay(t, s, map[string]publisher.Publisher{"orders": rb.publisher(t)})
	p := newPublisher(t, s, "orders")
	ctx := testenv.Context(t, 30*time.Second)
	rolledBack := errors.New("the order insert failed")
	if err := pgxBegin(ctx, pool, func(c context.Context) error {
		if err := p.Publish(c, msg("order.placed", "SO-1")); err != nil {
			return err
		}
		return rolledBack
	}); !errors.Is(err, rolledBack) {
		t.Fatal(err)
	}
	placed := msg("order.placed", "SO-2")
	enqueue(t, pool, p, placed)
	enqueue(t, pool, p, placed) // the client retried
	got := collect(t, ds, 1, 30*time.Second)
	if got[0].MessageId != idOf(t, placed).String() {
		t.Fatalf("received %s, want %s", got[0].MessageId, idOf(t, placed))
	}
	quiet(t, ds, 500*time.Millisecond)
}
