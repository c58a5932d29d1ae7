package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
)

// countingStore counts the round trips a batch makes.
type countingStore struct {
	dedupe.BatchStore
	claims, claimBatches, completes, completeBatches, releaseBatches atomic.Int32
	failCompleteBatch                                                atomic.Bool
}

func (s *countingStore) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	s.claims.Add(1)
	return s.BatchStore.Claim(ctx, k, lease)
}

func (s *countingStore) Complete(ctx context.Context, c dedupe.Claim, r time.Duration) error {
	s.completes.Add(1)
	return s.BatchStore.Complete(ctx, c, r)
}

func (s *countingStore) ClaimBatch(ctx context.Context, ks []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	s.claimBatches.Add(1)
	return s.BatchStore.ClaimBatch(ctx, ks, lease)
}

func (s *countingStore) CompleteBatch(ctx context.Context, cs []dedupe.Claim, r time.Duration) ([]error, error) {
	s.completeBatches.Add(1)
	if s.failCompleteBatch.Load() {
		return nil, errors.New("connection reset")
	}
	return s.BatchStore.CompleteBatch(ctx, cs, r)
}

func (s *countingStore) ReleaseBatch(ctx context.Context, cs []dedupe.Claim) ([]error, error) {
	s.releaseBatches.Add(1)
	return s.BatchStore.ReleaseBatch(ctx, cs)
}

func batchOf(n int) []*consumer.Message {
	ms := make([]*consumer.Message, n)
	for i := range ms {
		ms[i] = msg()
		ms[i].Body = []byte(strconv.Itoa(i))
	}
	return ms
}

// processBatch runs ms through p as a transport does.
func processBatch(p *consumer.Processor, stop context.Context, ms []*consumer.Message) ([]consumer.Outcome, []error) {
	work := context.Background()
	ctxs := make([]context.Context, len(ms))
	for i, m := range ms {
		ctxs[i] = p.Begin(work, m)
	}
	var outs []consumer.Outcome
	var errs []error
	for len(outs) < len(ms) { // a dead letter ends a batch: the rest go on in the next
		o, e := p.ProcessBatch(stop, work, ctxs[len(outs):], ms[len(outs):])
		outs, errs = append(outs, o...), append(errs, e...)
	}
	for i, m := range ms {
		p.End(ctxs[i], m, outs[i], errs[i])
	}
	return outs, errs
}

// effects records the order in which a handler took effect.
type effects struct {
	mu    sync.Mutex
	order []string
	fail  map[string]int // body -> failures left
}

func (e *effects) handler() consumer.Handler {
	return consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		b := string(m.Body)
		if e.fail[b] > 0 {
			e.fail[b]--
			return fmt.Errorf("%s fails", b)
		}
		if e.fail[b] < 0 {
			return consumer.Permanent(fmt.Errorf("%s is poison", b))
		}
		e.order = append(e.order, b)
		return nil
	})
}

func TestProcessBatchOneRoundTripEach(t *testing.T) {
	store := &countingStore{BatchStore: newMemory(t)}
	e := &effects{}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h}
	ms := batchOf(10)
	outs, errs := processBatch(p, context.Background(), ms)
	for i := range ms {
		if outs[i] != consumer.OutcomeAck || errs[i] != nil {
			t.Fatalf("message %d: %v, %v", i, outs[i], errs[i])
		}
	}
	if fmt.Sprint(e.order) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("effects %v", e.order)
	}
	if store.claimBatches.Load() != 1 || store.completeBatches.Load() != 1 || store.claims.Load() != 0 || store.completes.Load() != 0 {
		t.Fatalf("round trips: %d claim batches, %d complete batches, %d claims, %d completes; want 1, 1, 0, 0",
			store.claimBatches.Load(), store.completeBatches.Load(), store.claims.Load(), store.completes.Load())
	}
	// Delivered again: all duplicates, no effect.
	again := make([]*consumer.Message, len(ms))
	for i, m := range ms {
		c := *m
		again[i] = &c
	}
	processBatch(p, context.Background(), again)
	if len(e.order) != 10 {
		t.Fatalf("redelivery took effect: %v", e.order)
	}
}

// A failing message leaves the batch: the ones before it complete together,
// it is retried in place, and the ones after it follow in order.
func TestProcessBatchFailureKeepsOrder(t *testing.T) {
	store := &countingStore{BatchStore: newMemory(t)}
	e := &effects{fail: map[string]int{"4": 2, "7": -1}}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	ms := batchOf(10)
	outs, errs := processBatch(p, context.Background(), ms)
	for i := range ms {
		want := consumer.OutcomeAck
		if i == 7 {
			want = consumer.OutcomeDeadLetter
		}
		if outs[i] != want {
			t.Fatalf("message %d: %v (%v), want %v", i, outs[i], errs[i], want)
		}
	}
	if fmt.Sprint(e.order) != "[0 1 2 3 4 5 6 8 9]" {
		t.Fatalf("effects %v, want 0..9 in order without the poison 7", e.order)
	}
	if ms[4].Attempt != 3 {
		t.Fatalf("message 4 ran %d times, want 3", ms[4].Attempt)
	}
	// Every completed message is a duplicate now, the failed ones included.
	for i, m := range ms {
		c, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: m.ID}, 0)
		if i != 7 && (err != nil || c.Status != dedupe.Duplicate) {
			t.Fatalf("message %d after the batch: %v, %v", i, c.Status, err)
		}
	}
}

// A message whose claim another consumer holds waits for it; the messages
// before it are done in the batch.
func TestProcessBatchInFlight(t *testing.T) {
	mem := newMemory(t)
	e := &effects{}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(mem, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	ms := batchOf(5)
	if c, err := mem.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: ms[2].ID}, 50*time.Millisecond); err != nil || !c.Acquired() {
		t.Fatal(c, err)
	}
	p := &consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	outs, _ := processBatch(p, context.Background(), ms)
	for i := range ms {
		if outs[i] != consumer.OutcomeAck {
			t.Fatalf("message %d: %v", i, outs[i])
		}
	}
	if fmt.Sprint(e.order) != "[0 1 2 3 4]" {
		t.Fatalf("effects %v", e.order)
	}
}

// A completion batch that fails is retried claim by claim: no handler runs
// twice.
func TestProcessBatchCompleteFailure(t *testing.T) {
	store := &countingStore{BatchStore: newMemory(t)}
	store.failCompleteBatch.Store(true)
	e := &effects{}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h}
	outs, _ := processBatch(p, context.Background(), batchOf(6))
	for i, o := range outs {
		if o != consumer.OutcomeAck {
			t.Fatalf("message %d: %v", i, o)
		}
	}
	if len(e.order) != 6 || store.completes.Load() != 6 {
		t.Fatalf("%d effects, %d single completions; want 6 and 6", len(e.order), store.completes.Load())
	}
}

// Stopping while a failed message waits between attempts hands it and every
// later one back.
func TestProcessBatchAbandon(t *testing.T) {
	e := &effects{fail: map[string]int{"2": 100}}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(newMemory(t), "billing"))
	if err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	p := &consumer.Processor{Handler: h, MaxAttempts: 1000, MinBackoff: time.Hour, MaxBackoff: time.Hour}
	outs, _ := processBatch(p, stop, batchOf(5))
	want := []consumer.Outcome{consumer.OutcomeAck, consumer.OutcomeAck, consumer.OutcomeAbandon, consumer.OutcomeAbandon, consumer.OutcomeAbandon}
	if fmt.Sprint(outs) != fmt.Sprint(want) || fmt.Sprint(e.order) != "[0 1]" {
		t.Fatalf("outcomes %v, effects %v; want %v and [0 1]", outs, e.order, want)
	}
}

// With the PostgreSQL inbox, a batch is one transaction with a savepoint per
// message: a failing message rolls back only its own row, and a deferred
// constraint that fails the group sends every message through one by one.
func TestProcessBatchInbox(t *testing.T) {
	pool := testsink.Pool(t)
	store := newInbox(t, pool)
	parent, child := testenv.Name(t, "parent"), testenv.Name(t, "child")
	ctx := testenv.Context(t, time.Minute)
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s (id text PRIMARY KEY);
		CREATE TABLE %[2]s (id text PRIMARY KEY, parent text REFERENCES %[1]s DEFERRABLE INITIALLY DEFERRED, seq bigserial)`,
		pgx.Identifier{parent}.Sanitize(), pgx.Identifier{child}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTables(t, child, parent) })
	var mu sync.Mutex
	failures := map[string]int{"3": 1}
	var runs atomic.Int32
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		runs.Add(1)
		tx, ok := pgstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no transaction")
		}
		b := string(m.Body)
		par := b
		if b == "orphan" {
			par = "no-such-parent"
		} else if _, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{parent}.Sanitize()+" VALUES ($1)", b); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{child}.Sanitize()+" VALUES ($1, $2)", b, par); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if failures[b] > 0 {
			failures[b]--
			return errors.New("after writing, fails")
		}
		return nil
	}), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	count := func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{child}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	ms := batchOf(6)
	outs, errs := processBatch(p, context.Background(), ms)
	for i := range ms {
		if outs[i] != consumer.OutcomeAck {
			t.Fatalf("message %d: %v, %v", i, outs[i], errs[i])
		}
	}
	if n := count(); n != 6 {
		t.Fatalf("%d rows after the batch, want 6 (the failed attempt rolled back to its savepoint)", n)
	}
	var order []string
	rows, err := pool.Query(ctx, "SELECT id FROM "+pgx.Identifier{child}.Sanitize()+" ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	if rows.Err() != nil || fmt.Sprint(order) != "[0 1 2 3 4 5]" {
		t.Fatalf("rows written in the order %v (%v), want the messages' order", order, rows.Err())
	}

	// A group whose commit fails on one member's deferred constraint.
	ms = batchOf(4)
	for i, m := range ms {
		m.Body = []byte(fmt.Sprint("g", i))
	}
	ms[2].Body = []byte("orphan")
	outs, errs = processBatch(p, context.Background(), ms)
	for i := range ms {
		want := consumer.OutcomeAck
		if i == 2 {
			want = consumer.OutcomeDeadLetter
		}
		if outs[i] != want {
			t.Fatalf("group message %d: %v, %v; want %v", i, outs[i], errs[i], want)
		}
	}
	if !errors.Is(errs[2], dedupe.ErrRolledBack) {
		t.Fatalf("the orphan's reason %v, want ErrRolledBack", errs[2])
	}
	if n := count(); n != 9 {
		t.Fatalf("%d rows, want 9: the group's three good messages once each, the orphan never", n)
	}
}

// Stopping while a message of the batch runs lets it finish; no later
// message starts, each is handed back with its claim released, whether the
// batch runs on a BatchStore or in one BatchInbox transaction.
func TestProcessBatchStopsStartingAtShutdown(t *testing.T) {
	for _, sc := range []struct {
		name  string
		store func(t *testing.T) dedupe.Store
	}{
		{"store", func(t *testing.T) dedupe.Store { return newMemory(t) }},
		{"inbox", func(t *testing.T) dedupe.Store { return newInbox(t, testsink.Pool(t)) }},
	} {
		t.Run(sc.name, func(t *testing.T) {
			store := sc.store(t)
			stop, cancel := context.WithCancel(context.Background())
			defer cancel()
			e := &effects{}
			inner := e.handler()
			h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				if string(m.Body) == "1" {
					cancel() // shutdown begins while message 1 runs
				}
				return inner.Handle(ctx, m)
			}), consumer.WithDedupe(store, "billing"))
			if err != nil {
				t.Fatal(err)
			}
			p := &consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
			ms := batchOf(5)
			outs, _ := processBatch(p, stop, ms)
			want := []consumer.Outcome{consumer.OutcomeAck, consumer.OutcomeAck, consumer.OutcomeAbandon, consumer.OutcomeAbandon, consumer.OutcomeAbandon}
			if fmt.Sprint(outs) != fmt.Sprint(want) || fmt.Sprint(e.order) != "[0 1]" {
				t.Fatalf("outcomes %v, effects %v; want %v and [0 1]", outs, e.order, want)
			}
			for i, m := range ms[2:] {
				c, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: m.ID}, time.Minute)
				if err != nil || c.Status != dedupe.Acquired {
					t.Fatalf("message %d after the batch: %v, %v; want its claim released", i+2, c.Status, err)
				}
			}
		})
	}
}

// A message that asks for the dead letter ends the batch: ProcessBatch
// returns without starting the later messages, so that the caller stores
// the dead letter before any later message takes effect.
func TestProcessBatchEndsAtDeadLetter(t *testing.T) {
	store := &countingStore{BatchStore: newMemory(t)}
	e := &effects{fail: map[string]int{"2": -1}}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	ms := batchOf(5)
	work := context.Background()
	ctxs := make([]context.Context, len(ms))
	for i, m := range ms {
		ctxs[i] = p.Begin(work, m)
	}
	outs, errs := p.ProcessBatch(context.Background(), work, ctxs, ms)
	want := []consumer.Outcome{consumer.OutcomeAck, consumer.OutcomeAck, consumer.OutcomeDeadLetter}
	if fmt.Sprint(outs) != fmt.Sprint(want) || len(errs) != 3 || fmt.Sprint(e.order) != "[0 1]" {
		t.Fatalf("outcomes %v (errors %v), effects %v; want %v and [0 1]", outs, errs, e.order, want)
	}
	for i, m := range ms[3:] {
		c, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: m.ID}, time.Minute)
		if err != nil || c.Status != dedupe.Acquired {
			t.Fatalf("message %d: %v, %v; want it untouched", i+3, c.Status, err)
		}
		if err := store.Release(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	outs, _ = p.ProcessBatch(context.Background(), work, ctxs[3:], ms[3:])
	if fmt.Sprint(outs) != "[ack ack]" || fmt.Sprint(e.order) != "[0 1 3 4]" {
		t.Fatalf("the rest: outcomes %v, effects %v", outs, e.order)
	}
}

// With the inbox too, a message whose claim another consumer holds waits
// for it, and the messages after it take effect only after it.
func TestProcessBatchInboxInFlight(t *testing.T) {
	store := newInbox(t, testsink.Pool(t))
	e := &effects{}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	ms := batchOf(5)
	if c, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: ms[2].ID}, 200*time.Millisecond); err != nil || !c.Acquired() {
		t.Fatal(c, err)
	}
	p := &consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	outs, _ := processBatch(p, context.Background(), ms)
	for i := range ms {
		if outs[i] != consumer.OutcomeAck {
			t.Fatalf("message %d: %v", i, outs[i])
		}
	}
	if fmt.Sprint(e.order) != "[0 1 2 3 4]" {
		t.Fatalf("effects %v, want [0 1 2 3 4]", e.order)
	}
}

// tryBatch runs ms through p.TryBatch as the RabbitMQ loop does.
func tryBatch(p *consumer.Processor, stop context.Context, ms []*consumer.Message) ([]consumer.Outcome, []error) {
	work := context.Background()
	ctxs := make([]context.Context, len(ms))
	for i, m := range ms {
		ctxs[i] = p.Begin(work, m)
	}
	return p.TryBatch(stop, work, ctxs, ms)
}

// TryBatch tries every member once: a failing one is handed back for a
// retry without holding up the others, a permanent one asks for the dead
// letter, and the claims and completions take one round trip each.
func TestTryBatch(t *testing.T) {
	store := &countingStore{BatchStore: newMemory(t)}
	e := &effects{fail: map[string]int{"2": 1, "5": -1}}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	ms := batchOf(8)
	outs, errs := tryBatch(p, context.Background(), ms)
	for i, o := range outs {
		want := consumer.OutcomeAck
		switch i {
		case 2:
			want = consumer.OutcomeRetry
		case 5:
			want = consumer.OutcomeDeadLetter
		}
		if o != want || (want != consumer.OutcomeAck) != (errs[i] != nil) {
			t.Fatalf("message %d: %v, %v; want %v", i, o, errs[i], want)
		}
	}
	if fmt.Sprint(e.order) != "[0 1 3 4 6 7]" {
		t.Fatalf("effects %v: the others must not wait for the failing one", e.order)
	}
	if store.claimBatches.Load() != 1 || store.completeBatches.Load() != 1 || store.claims.Load() != 0 || store.completes.Load() != 0 {
		t.Fatalf("round trips: %d claim batches, %d complete batches, %d claims, %d completes", store.claimBatches.Load(), store.completeBatches.Load(), store.claims.Load(), store.completes.Load())
	}
	// The retried one goes on counting from its first attempt.
	if out, err := p.Process(context.Background(), context.Background(), ms[2]); out != consumer.OutcomeAck || err != nil || ms[2].Attempt != 2 {
		t.Fatalf("retry: %v, %v after %d attempts; want ack after 2", out, err, ms[2].Attempt)
	}
	// Delivered again: all duplicates.
	again := make([]*consumer.Message, len(ms))
	for i, m := range ms {
		c := *m
		again[i] = &c
	}
	outs, _ = tryBatch(p, context.Background(), again)
	for i, o := range outs {
		if i != 5 && o != consumer.OutcomeAck {
			t.Fatalf("redelivery %d: %v", i, o)
		}
	}
	if len(e.order) != 7 {
		t.Fatalf("redelivery took effect: %v", e.order)
	}
}

// Once stop is done no member starts, and its claim is given back.
func TestTryBatchStop(t *testing.T) {
	mem := newMemory(t)
	e := &effects{}
	h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(mem, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(context.Background())
	cancel()
	p := &consumer.Processor{Handler: h}
	ms := batchOf(4)
	outs, _ := tryBatch(p, stop, ms)
	if outs[0] != consumer.OutcomeAck || outs[1] != consumer.OutcomeAbandon || outs[3] != consumer.OutcomeAbandon {
		t.Fatalf("outcomes %v: the first (in progress) finishes, no other starts", outs)
	}
	if c, err := mem.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: ms[1].ID}, time.Minute); err != nil || !c.Acquired() {
		t.Fatalf("the abandoned member's claim was kept: %v, %v", c.Status, err)
	}
}

// With the PostgreSQL inbox, a failing member rolls back only its own
// writes and the others commit in the same transaction.
func TestTryBatchInbox(t *testing.T) {
	pool := testsink.Pool(t)
	store := newInbox(t, pool)
	table := testenv.Name(t, "effects")
	ctx := testenv.Context(t, time.Minute)
	if _, err := pool.Exec(ctx, "CREATE TABLE "+pgx.Identifier{table}.Sanitize()+" (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTables(t, table) })
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		tx, _ := pgstore.TxFromContext(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{table}.Sanitize()+" VALUES ($1)", string(m.Body)); err != nil {
			return err
		}
		if string(m.Body) == "1" && m.Attempt == 1 {
			return errors.New("fails after writing")
		}
		return nil
	}), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	ms := batchOf(4)
	outs, _ := tryBatch(p, context.Background(), ms)
	if fmt.Sprint(outs) != fmt.Sprint([]consumer.Outcome{consumer.OutcomeAck, consumer.OutcomeRetry, consumer.OutcomeAck, consumer.OutcomeAck}) {
		t.Fatalf("outcomes %v", outs)
	}
	if out, err := p.Process(context.Background(), context.Background(), ms[1]); out != consumer.OutcomeAck {
		t.Fatalf("retry: %v, %v", out, err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d rows (%v), want 4: the failed attempt's row rolled back, the retry's kept", n, err)
	}
}

// A message refused above the dedupe layer (a forged ID) must give back the
// claim its batch took for it: the real message with the same ID, in the
// same batch, is then processed instead of waiting for that claim's lease.
func TestBatchReleasesClaimsRefusedAboveDedupe(t *testing.T) {
	secret, _ := forge.NewSecret()
	gen := forge.MustNew("orders.example.com", forge.WithSecret(secret))
	real := publisher.Message{Type: "order.placed", Key: []any{"SO-9"}, Body: []byte("real")}
	l, err := publisher.IDs(context.Background(), gen, &real)
	if err != nil {
		t.Fatal(err)
	}
	newPair := func() []*consumer.Message {
		return []*consumer.Message{
			{ID: l.MessageID, CorrelationID: l.MessageID, Type: "order.placed", Key: []byte("SO-1"), Body: []byte("squat")},
			{ID: l.MessageID, CorrelationID: l.MessageID, Type: "order.placed", Key: []byte("SO-9"), Body: []byte("real")},
		}
	}
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered=", ordered), func(t *testing.T) {
			e := &effects{}
			h, err := consumer.NewHandler(e.handler(), consumer.WithDedupe(newMemory(t), "billing"),
				consumer.WithVerifiedIDs(gen), consumer.WithLease(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			p := &consumer.Processor{Handler: h, MaxAttempts: 1, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
			ms := newPair()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // far below the lease
			defer cancel()
			var outs []consumer.Outcome
			if ordered {
				// ProcessBatch ends at a dead letter; the caller stores it
				// and passes the rest again, as the Kafka loop does.
				for len(outs) < len(ms) {
					o, _ := processBatch(p, ctx, ms[len(outs):])
					outs = append(outs, o...)
				}
			} else {
				outs, _ = tryBatch(p, ctx, ms)
				if outs[1] == consumer.OutcomeRetry {
					outs[1], _ = p.Process(ctx, ctx, ms[1])
				}
			}
			if outs[0] != consumer.OutcomeDeadLetter || outs[1] != consumer.OutcomeAck || fmt.Sprint(e.order) != "[real]" {
				t.Fatalf("outcomes %v, effects %v; want the squatter dead-lettered and the real one processed", outs, e.order)
			}
		})
	}
}
