package rabbitsub_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// gate holds the first store call of a consumer until the test opens it,
// so that every message published before is in the consumer's prefetch
// window when its next batch forms: the first batch may hold only the
// delivery that arrived first, the next one holds all the others.
type gate chan struct{}

func (g gate) wait(ctx context.Context) {
	select {
	case <-g:
	case <-ctx.Done():
	}
}

// openWhenDelivered opens g once the broker has delivered every message of
// q (none is ready; the prefetch window holds them all).
func (g gate) openWhenDelivered(t *testing.T, b *broker, q string) {
	t.Helper()
	waitFor(t, 20*time.Second, "the messages were not delivered", func() bool { return b.depth(t, q) == 0 })
	close(g)
}

// countingStore is the memory store (a dedupe.BatchStore) behind a gate,
// counting its round trips for claims and completions. With hold set,
// CompleteBatch waits until hold is closed.
type countingStore struct {
	*dedupe.Memory
	gate gate
	hold chan struct{}

	claims, completes    atomic.Int64 // round trips: single calls and batches alike
	batches, largest     atomic.Int64 // ClaimBatch calls and their largest key count
	singleCompletes      atomic.Int64 // successful Complete calls
	batchCompleted       atomic.Int64 // claims given to CompleteBatch
	enteredOnce          sync.Once
	completeBatchEntered chan struct{} // closed when CompleteBatch is first called
}

func newCountingStore(t *testing.T) *countingStore {
	m, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &countingStore{Memory: m, gate: make(gate), completeBatchEntered: make(chan struct{})}
}

var _ dedupe.BatchStore = (*countingStore)(nil)

func (s *countingStore) Claim(ctx context.Context, key dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	s.gate.wait(ctx)
	s.claims.Add(1)
	return s.Memory.Claim(ctx, key, lease)
}

func (s *countingStore) ClaimBatch(ctx context.Context, keys []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	s.gate.wait(ctx)
	s.claims.Add(1)
	s.batches.Add(1)
	for {
		l := s.largest.Load()
		if int64(len(keys)) <= l || s.largest.CompareAndSwap(l, int64(len(keys))) {
			break
		}
	}
	return s.Memory.ClaimBatch(ctx, keys, lease)
}

func (s *countingStore) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	s.completes.Add(1)
	err := s.Memory.Complete(ctx, c, retention)
	if err == nil {
		s.singleCompletes.Add(1)
	}
	return err
}

func (s *countingStore) CompleteBatch(ctx context.Context, claims []dedupe.Claim, retention time.Duration) ([]error, error) {
	s.completes.Add(1)
	s.batchCompleted.Add(int64(len(claims)))
	s.enteredOnce.Do(func() { close(s.completeBatchEntered) })
	if s.hold != nil {
		<-s.hold
	}
	return s.Memory.CompleteBatch(ctx, claims, retention)
}

// gatedInbox is the PostgreSQL store (a dedupe.BatchInbox) behind a gate,
// counting its batches.
type gatedInbox struct {
	*pgstore.Store
	gate    gate
	batches atomic.Int64
}

func (s *gatedInbox) Process(ctx context.Context, key dedupe.Key, lease, retention time.Duration, fn func(context.Context) error) (dedupe.Claim, error) {
	s.gate.wait(ctx)
	return s.Store.Process(ctx, key, lease, retention, fn)
}

func (s *gatedInbox) ProcessBatch(ctx context.Context, keys []dedupe.Key, lease, retention time.Duration, fn func(context.Context, int) error) ([]dedupe.Result, error) {
	s.gate.wait(ctx)
	s.batches.Add(1)
	return s.Store.ProcessBatch(ctx, keys, lease, retention, fn)
}

// outcomes records how each delivery ended, in order.
type outcomes struct {
	mu         sync.Mutex
	order      []uuid.UUID
	by         map[uuid.UUID]consumer.Delivery
	seq        int
	start, end map[uuid.UUID]int // when each delivery started and ended, in one sequence
}

func (o *outcomes) DeliveryStart(ctx context.Context, m *consumer.Message) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.start == nil {
		o.start = map[uuid.UUID]int{}
	}
	o.seq++
	o.start[m.ID] = o.seq
	return ctx
}

func (o *outcomes) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (o *outcomes) DeliveryDone(_ context.Context, m *consumer.Message, d consumer.Delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.by == nil {
		o.by = map[uuid.UUID]consumer.Delivery{}
	}
	o.order = append(o.order, m.ID)
	o.by[m.ID] = d
	if o.end == nil {
		o.end = map[uuid.UUID]int{}
	}
	o.seq++
	o.end[m.ID] = o.seq
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.order)
}

func publishIDs(t *testing.T, b *broker, q string, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	msgs := make([]amqp.Publishing, n)
	for i := range ids {
		ids[i] = uuid.New()
		msgs[i] = amqp.Publishing{MessageId: ids[i].String(), Body: []byte(fmt.Sprint("message ", i))}
	}
	b.publish(t, q, msgs...)
	return ids
}

// The deliveries a worker takes together are claimed in one round trip and
// completed in one round trip: 16 messages in the prefetch window cost at
// most two of each (the first batch may have formed before all had
// arrived), where one delivery at a time costs 16.
func TestBatchClaimsInOneRoundTrip(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	const n = 16
	ids := publishIDs(t, b, q, n)
	store := newCountingStore(t)
	var h handled
	c, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler), append(fast(), consumer.WithDedupe(store, q),
		rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(n))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	store.gate.openWhenDelivered(t, b, q)
	waitFor(t, 20*time.Second, "not every message was handled", func() bool { return h.count() == n })
	waitEmpty(t, b, q)
	r.Stop(t)
	if got, want := store.claims.Load(), int64(2); got > want {
		t.Errorf("%d claim round trips for %d messages, want at most %d", got, n, want)
	}
	if got, want := store.completes.Load(), int64(2); got > want {
		t.Errorf("%d completion round trips for %d messages, want at most %d", got, n, want)
	}
	if store.largest.Load() < n/2 {
		t.Errorf("largest batch claimed %d keys, want at least %d", store.largest.Load(), n/2)
	}
	for _, id := range ids {
		if h.ids[id.String()] != 1 {
			t.Errorf("message %s handled %d times", id, h.ids[id.String()])
		}
	}
}

// A member of a batch that fails affects no other member: on the memory
// store (claims and completions in one round trip) and on the PostgreSQL
// inbox (one transaction, a savepoint per message), one message that fails
// once and one that fails permanently in the middle of a batch: every
// other message is processed once, on its first attempt, and acked before
// the failed one is retried; the failing one is retried and processed; the
// permanent one alone is dead-lettered.
func TestBatchFailureAffectsOnlyItsMessage(t *testing.T) {
	for _, sc := range []struct {
		name  string
		store func(t *testing.T) (dedupe.Store, gate, func() int64)
	}{
		{"memory", func(t *testing.T) (dedupe.Store, gate, func() int64) {
			s := newCountingStore(t)
			return s, s.gate, s.batches.Load
		}},
		{"postgres", func(t *testing.T) (dedupe.Store, gate, func() int64) {
			s := &gatedInbox{Store: testsink.Postgres(t).(*pgstore.Store), gate: make(gate)}
			return s, s.gate, s.batches.Load
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			b := newBroker(t)
			q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
			sink := testsink.New(t, testsink.Pool(t))
			const n = 12
			ids := publishIDs(t, b, q, n)
			transient, permanent := ids[4], ids[8]
			h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				switch {
				case m.ID == permanent:
					return consumer.Permanent(errors.New("rejected by the handler"))
				case m.ID == transient && m.Attempt == 1:
					return errors.New("not yet")
				}
				return sink.Handle(ctx, m)
			})
			store, g, batches := sc.store(t)
			obs := &outcomes{}
			c, err := rabbitsub.New(b.url, q, h, append(fast(), consumer.WithDedupe(store, q), consumer.WithObserver(obs),
				consumer.WithLogger(discard()), rabbitsub.WithDeadLetterQueue(dlq),
				rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(n))...)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, c)
			g.openWhenDelivered(t, b, q)
			waitFor(t, 20*time.Second, "not every delivery ended", func() bool { return obs.count() == n })
			r.Stop(t)
			if batches() == 0 {
				t.Fatal("no batch: the test did not exercise one")
			}
			if sink.Count(t) != n-1 || sink.Dups() != 0 {
				t.Errorf("%d rows, %d duplicate effects; want %d and 0", sink.Count(t), sink.Dups(), n-1)
			}
			if got := b.depth(t, q); got != 0 {
				t.Errorf("%d messages left in the queue", got)
			}
			if dead := b.drain(t, dlq); len(dead) != 1 || dead[0].MessageId != permanent.String() {
				t.Errorf("%d dead letters, want the permanent failure alone", len(dead))
			}
			for _, id := range ids {
				d := obs.by[id]
				want := consumer.Delivery{Result: consumer.Processed, Attempts: 1}
				switch id {
				case transient:
					want.Attempts = 2
				case permanent:
					want.Result = consumer.DeadLettered
				}
				if d.Result != want.Result || d.Attempts != want.Attempts {
					t.Errorf("message %d: %s after %d attempt(s), want %s after %d", indexOf(ids, id), d.Result, d.Attempts, want.Result, want.Attempts)
				}
			}
			// Every message that started before the retried one ended (its
			// batch; later batches start only once it is settled) ended
			// before it: none waited for its retry.
			for _, id := range ids {
				if id != transient && obs.start[id] < obs.end[transient] && obs.end[id] > obs.end[transient] {
					t.Errorf("message %d started with the retried one and ended after it: it waited for the retry", indexOf(ids, id))
				}
			}
		})
	}
}

func indexOf(ids []uuid.UUID, id uuid.UUID) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// Nothing of a batch is acked before its completions are stored: while
// CompleteBatch is held, the consumer's connection is cut, and every
// message not completed on its own must go back to the queue (an ack
// already sent would have removed it). Once released, every message is
// processed once.
func TestBatchNotAckedBeforeCompletion(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	const n = 10
	publishIDs(t, b, q, n)
	store := newCountingStore(t)
	store.hold = make(chan struct{})
	var h handled
	d := &connDialer{url: b.url}
	c, err := rabbitsub.New(d.url, q, consumer.HandlerFunc(h.handler), append(fast(), consumer.WithDedupe(store, q),
		consumer.WithLogger(discard()), rabbitsub.WithDial(d.dial),
		rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(n))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	store.gate.openWhenDelivered(t, b, q)
	select {
	case <-store.completeBatchEntered:
	case <-time.After(20 * time.Second):
		close(store.hold)
		t.Fatal("no batch was completed")
	}
	time.Sleep(200 * time.Millisecond) // an ack sent too early would reach the broker now
	if d.cut() == 0 {
		close(store.hold)
		t.Fatal("no connection to cut")
	}
	want := n - int(store.singleCompletes.Load())
	deadline := time.Now().Add(10 * time.Second)
	for b.depth(t, q) != want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := b.depth(t, q)
	close(store.hold)
	if got != want {
		t.Fatalf("%d messages back in the queue after the connection was cut, want %d: acked before their completion was stored", got, want)
	}
	if store.batchCompleted.Load() < 2 {
		t.Fatal("the held batch had fewer than 2 members")
	}
	waitFor(t, 20*time.Second, "not every message was handled", func() bool { return h.count() == n })
	waitEmpty(t, b, q)
	r.Stop(t)
}

// The observer sees the message's IDs and exchange when the delivery
// starts (a tracing observer names and links its span then), and the
// handler sees the exchange the message was published to.
func TestIdentityKnownAtStart(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	ex := fmt.Sprintf("%s.ex", q)
	if err := b.ch.ExchangeDeclare(ex, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.ch.QueueBind(q, "order.placed", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	ctx := context.Background()
	if err := b.ch.PublishWithContext(ctx, ex, "order.placed", true, false, amqp.Publishing{MessageId: id.String(), Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *consumer.Message, 1)
	seen := &startSeen{}
	c, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		cp := *m
		got <- &cp
		return nil
	}), append(fast(), consumer.WithObserver(seen))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	var m *consumer.Message
	select {
	case m = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("message not handled")
	}
	r.Stop(t)
	if m.Exchange != ex || m.RoutingKey != "order.placed" {
		t.Errorf("handler saw exchange %q, routing key %q; want %q, %q", m.Exchange, m.RoutingKey, ex, "order.placed")
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if seen.id != id || seen.correlation != id || seen.exchange != ex {
		t.Errorf("DeliveryStart saw ID %s, correlation ID %s, exchange %q; want %s, %s, %q", seen.id, seen.correlation, seen.exchange, id, id, ex)
	}
}

// startSeen records what DeliveryStart saw of the last delivery.
type startSeen struct {
	mu              sync.Mutex
	id, correlation uuid.UUID
	exchange        string
}

func (s *startSeen) DeliveryStart(ctx context.Context, m *consumer.Message) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id, s.correlation, s.exchange = m.ID, m.CorrelationID, m.Exchange
	return ctx
}

func (s *startSeen) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (s *startSeen) DeliveryDone(context.Context, *consumer.Message, consumer.Delivery) {}

// With several workers, a delivery one worker holds is never acked by
// another worker's ack: while the first message's handler blocks, a second
// worker handles and acks the nine behind it; when the connection is then
// cut, the held message, and it alone, goes back to the queue.
func TestAckNeverCoversAHeldDelivery(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	const n = 10
	ids := publishIDs(t, b, q, n)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var h handled
	handler := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.ID == ids[0] {
			once.Do(func() { close(held) })
			<-release
		}
		return h.handler(ctx, m)
	})
	d := &connDialer{url: b.url}
	c, err := rabbitsub.New(d.url, q, handler, append(fast(), consumer.WithLogger(discard()), rabbitsub.WithDial(d.dial),
		rabbitsub.WithWorkers(2), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(1))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the first message was not delivered")
	}
	waitFor(t, 20*time.Second, "the other messages were not handled", func() bool { return h.count() == n-1 })
	time.Sleep(100 * time.Millisecond) // their acks reach the broker
	if d.cut() == 0 {
		close(release)
		t.Fatal("no connection to cut")
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.depth(t, q) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := b.depth(t, q)
	close(release)
	if got != 1 {
		t.Fatalf("%d messages back in the queue after the connection was cut, want the held one alone", got)
	}
	waitFor(t, 20*time.Second, "the held message was not handled", func() bool { return h.count() == n })
	waitEmpty(t, b, q)
	r.Stop(t)
}
