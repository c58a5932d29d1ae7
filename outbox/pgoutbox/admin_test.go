package pgoutbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// TestCleanup: dispatched rows past the retention go, in batches of the
// given size; pending, dead and recent rows stay.
func TestCleanup(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool, pgoutbox.WithRetention(time.Hour))
	ctx := testenv.Context(t, 30*time.Second)
	var msgs []publisher.Message
	for i := range 25 {
		msgs = append(msgs, msg("m", string(rune('a'+i))))
	}
	enqueue(t, pool, newPublisher(t, s, "d"), msgs...)
	b := claim(t, s, "d", 100)
	recs := b.Records()
	finish(t, b, outbox.Outcome{
		Dispatched: seqs(recs[:22]),
		Dead:       []outbox.Failure{{Seq: recs[22].Seq, Reason: "x"}},
	}) // 22 dispatched, 1 dead, 2 pending
	// 20 of the dispatched rows are old, 2 recent.
	if _, err := pool.Exec(ctx, `UPDATE `+s.Table()+` SET done_at = done_at - interval '2 hours' WHERE seq = ANY($1)`, seqs(recs[:20])); err != nil {
		t.Fatal(err)
	}
	// Old pending and dead rows are never deleted.
	if _, err := pool.Exec(ctx, `UPDATE `+s.Table()+` SET created_at = created_at - interval '3 days', done_at = done_at - interval '3 days' WHERE seq = ANY($1)`, seqs(recs[22:])); err != nil {
		t.Fatal(err)
	}
	n, err := s.Cleanup(ctx, 6)
	if err != nil || n != 20 {
		t.Fatalf("Cleanup = %d, %v; want 20", n, err)
	}
	if got := count(t, pool, s, outbox.Dispatched); got != 2 {
		t.Errorf("%d dispatched rows left, want 2", got)
	}
	if got := count(t, pool, s, outbox.Dead) + count(t, pool, s, outbox.Pending); got != 3 {
		t.Errorf("%d dead and pending rows left, want 3", got)
	}
	if n, err := s.Cleanup(ctx, 0); err != nil || n != 0 {
		t.Errorf("second Cleanup = %d, %v; want 0", n, err)
	}
	if _, err := s.Cleanup(ctx, -1); err == nil {
		t.Error("Cleanup(-1) accepted it")
	}
}

// TestCleanupStatements: a cleanup of many rows is many bounded
// statements, never one unbounded DELETE.
func TestCleanupStatements(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool, pgoutbox.WithRetention(time.Millisecond))
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := pool.Exec(ctx, `INSERT INTO `+s.Table()+` (destination, message_id, correlation_id, type, body, state, due_at, done_at)
		SELECT 'd', id, id, 't', '', 'dispatched', NULL, clock_timestamp() - interval '1 hour'
		FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 2500)) AS g`); err != nil {
		t.Fatal(err)
	}
	var stmts atomic.Int64
	tracer := &statementCounter{n: &stmts, match: "DELETE FROM"}
	cpool := newTracedPool(t, tracer)
	cs, err := pgoutbox.New(cpool, pgoutbox.WithTable(strings.Trim(s.Table(), `"`)), pgoutbox.WithRetention(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	n, err := cs.Cleanup(ctx, 1000)
	if err != nil || n != 2500 {
		t.Fatalf("Cleanup = %d, %v; want 2500", n, err)
	}
	if got := stmts.Load(); got != 3 {
		t.Errorf("%d DELETE statements, want 3 of at most 1000 rows", got)
	}
}

func TestJanitor(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool, pgoutbox.WithRetention(time.Millisecond))
	enqueue(t, pool, newPublisher(t, s, "d"), msg("a", "1"), msg("b", "2"))
	b := claim(t, s, "d", 10)
	finish(t, b, outbox.Outcome{Dispatched: seqs(b.Records())})
	errs := make(chan error, 10)
	j, err := pgoutbox.New(pool, pgoutbox.WithTable(strings.Trim(s.Table(), `"`)),
		pgoutbox.WithRetention(time.Millisecond), pgoutbox.WithJanitor(20*time.Millisecond, func(err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(t, pool, s, "") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not clean up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Cleanup(context.Background(), 0); !errors.Is(err, pgoutbox.ErrClosed) {
		t.Errorf("Cleanup after Close = %v, want ErrClosed", err)
	}
	select {
	case err := <-errs:
		t.Errorf("janitor error: %v", err)
	default:
	}
}

// TestBacklog: pending count, oldest age and dead count per destination.
func TestBacklog(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 30*time.Second)
	if bl, err := s.Backlog(ctx); err != nil || len(bl) != 0 {
		t.Fatalf("empty Backlog = %v, %v", bl, err)
	}
	enqueue(t, pool, newPublisher(t, s, "a"), msg("a1", "1"), msg("a2", "2"), msg("a3", "3"))
	enqueue(t, pool, newPublisher(t, s, "b"), msg("b1", "1"))
	if _, err := pool.Exec(ctx, `UPDATE `+s.Table()+` SET created_at = created_at - interval '90 seconds' WHERE type = 'a1'`); err != nil {
		t.Fatal(err)
	}
	b := claim(t, s, "a", 10)
	recs := b.Records()
	finish(t, b, outbox.Outcome{Dispatched: []int64{recs[1].Seq}, Dead: []outbox.Failure{{Seq: recs[2].Seq, Reason: "x"}}})
	bl, err := s.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bl) != 2 || bl[0].Destination != "a" || bl[1].Destination != "b" {
		t.Fatalf("Backlog = %+v", bl)
	}
	if a := bl[0]; a.Pending != 1 || a.Dead != 1 || a.Age < 90*time.Second || a.Age > 2*time.Minute || !a.Oldest.Equal(recs[0].CreatedAt) {
		t.Errorf("a: %+v", a)
	}
	if b := bl[1]; b.Pending != 1 || b.Dead != 0 || b.Age <= 0 || b.Age > time.Minute {
		t.Errorf("b: %+v", b)
	}
}

// TestDeadAndRedrive: dead records are listed with their reason and
// redriven to the end of their key's queue, one or all, in order.
func TestDeadAndRedrive(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 30*time.Second)
	p := newPublisher(t, s, "d")
	enqueue(t, pool, p, msg("a1", "A"), msg("a2", "A"), msg("a3", "A"), msg("b1", "B"))
	enqueue(t, pool, newPublisher(t, s, "e"), msg("e1", "A"))
	b := claim(t, s, "d", 10)
	recs := b.Records()
	finish(t, b, outbox.Outcome{Dead: []outbox.Failure{
		{Seq: recs[0].Seq, Reason: "unroutable: no queue bound"},
		{Seq: recs[1].Seq, Reason: "invalid \x00 \xff"},
		{Seq: recs[3].Seq, Reason: strings.Repeat("é", 5000)},
	}})
	eb := claim(t, s, "e", 10)
	finish(t, eb, outbox.Outcome{Dead: []outbox.Failure{{Seq: eb.Records()[0].Seq, Reason: "e"}}})

	dead, err := s.Dead(ctx, "d", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types(dead), " "); got != "a1 a2 b1" {
		t.Fatalf("Dead = %s", got)
	}
	if dead[0].LastError != "unroutable: no queue bound" || dead[0].State != outbox.Dead || dead[0].DoneAt.IsZero() || dead[0].Attempts != 1 {
		t.Errorf("dead record %+v", dead[0])
	}
	if dead[1].LastError != "invalid  \uFFFD" || len(dead[2].LastError) > 4000 {
		t.Errorf("reasons %q, %d bytes", dead[1].LastError, len(dead[2].LastError))
	}
	page, err := s.Dead(ctx, "", dead[1].Seq, 10)
	if err != nil || strings.Join(types(page), " ") != "b1 e1" {
		t.Fatalf("Dead after %d = %v, %v", dead[1].Seq, types(page), err)
	}
	// a3 (the key's next record) was not held up by the dead ones.
	b = claim(t, s, "d", 10)
	if got := strings.Join(types(b.Records()), " "); got != "a3" {
		t.Fatalf("claim = %s, want a3", got)
	}
	finish(t, b, outbox.Outcome{})

	if _, err := s.Redrive(ctx, recs[2].Seq); !errors.Is(err, pgoutbox.ErrNotFound) {
		t.Errorf("Redrive of a pending record = %v, want ErrNotFound", err)
	}
	seq, err := s.Redrive(ctx, recs[3].Seq) // b1
	if err != nil || seq <= recs[3].Seq {
		t.Fatalf("Redrive = %d, %v", seq, err)
	}
	b1, err := s.Lookup(ctx, "d", recs[3].ID)
	if err != nil || b1.Seq != seq || b1.State != outbox.Pending || b1.Attempts != 0 || b1.LastError != "" || !b1.DoneAt.IsZero() {
		t.Fatalf("redriven %+v, %v", b1, err)
	}
	n, err := s.RedriveAll(ctx, "d", 1)
	if err != nil || n != 2 {
		t.Fatalf("RedriveAll = %d, %v; want 2", n, err)
	}
	// a1 and a2 are now behind a3, in their order.
	b = claim(t, s, "d", 10)
	if got := strings.Join(types(b.Records()), " "); got != "a3 b1 a1 a2" {
		t.Fatalf("claim after redrive = %s, want a3 b1 a1 a2", got)
	}
	finish(t, b, outbox.Outcome{})
	if dead, _ := s.Dead(ctx, "", 0, 10); len(dead) != 1 {
		t.Errorf("dead left: %v", types(dead))
	}
}

// TestListen: a commit that enqueued announces its destination; a rollback
// announces nothing.
func TestListen(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	woken := make(chan string, 10)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func(d string) { woken <- d }) }()
	if d := <-woken; d != "" {
		t.Fatalf("first wake %q, want \"\"", d)
	}
	p := newPublisher(t, s, "orders")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(pgoutbox.NewContext(ctx, tx), msg("a", "1")); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	enqueue(t, pool, p, msg("b", "1"), msg("c", "2"))
	select {
	case d := <-woken:
		if d != "orders" {
			t.Fatalf("woken for %q", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	select {
	case d := <-woken:
		t.Fatalf("second notification %q (rolled back, or not folded)", d)
	case <-time.After(200 * time.Millisecond):
	}
	// Without notifications, nothing is announced.
	quiet, _ := pgoutbox.New(pool, pgoutbox.WithTable(strings.Trim(s.Table(), `"`)), pgoutbox.WithoutNotify())
	enqueue(t, pool, newPublisher(t, quiet, "orders"), msg("d", "1"))
	select {
	case d := <-woken:
		t.Fatalf("notified %q although WithoutNotify", d)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Listen = %v after cancel, want nil", err)
	}
}

// TestInboxTransaction: inside the PostgreSQL inbox, a publisher writes
// into the inbox's transaction: its messages exist if and only if the
// handler's writes commit, with the handled message as their parent.
func TestInboxTransaction(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	inbox := newInbox(t)
	ctx := testenv.Context(t, 30*time.Second)
	p := newPublisher(t, s, "d")
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.placed"}
	fail := errors.New("handler failed after publishing")
	run := func(id uuid.UUID, err error) error {
		_, perr := inbox.Process(lineage.NewContext(ctx, parent), dedupe.Key{Scope: "billing", ID: id}, time.Minute, 0,
			func(ctx context.Context) error {
				if perr := p.Publish(ctx, msg("invoice.issued", "INV-1")); perr != nil {
					return perr
				}
				return err
			})
		return perr
	}
	if err := run(parent.MessageID, fail); !errors.Is(err, fail) {
		t.Fatalf("failing handler: %v", err)
	}
	if n := count(t, pool, s, ""); n != 0 {
		t.Fatalf("%d rows after a failed handler, want 0", n)
	}
	if err := run(parent.MessageID, nil); err != nil {
		t.Fatal(err)
	}
	if err := run(parent.MessageID, nil); err != nil { // a duplicate: not run
		t.Fatal(err)
	}
	if n := count(t, pool, s, ""); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
	b := claim(t, s, "d", 10)
	r := b.Records()[0]
	finish(t, b, outbox.Outcome{})
	if r.CausationID != parent.MessageID || r.CorrelationID != parent.CorrelationID {
		t.Errorf("lineage %s/%s, want causation %s correlation %s", r.CausationID, r.CorrelationID, parent.MessageID, parent.CorrelationID)
	}
}

// TestClosedStore: the relay's calls fail with ErrClosed after Close.
func TestClosedStore(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	_ = s.Close()
	ctx := testenv.Context(t, 10*time.Second)
	_, err1 := s.Claim(ctx, "d", 1)
	err2 := s.Listen(ctx, func(string) {})
	_, err3 := s.Backlog(ctx)
	_, err4 := s.Dead(ctx, "", 0, 1)
	_, err5 := s.Redrive(ctx, 1)
	_, err6 := s.RedriveAll(ctx, "d", 0)
	_, err7 := s.Lookup(ctx, "d", uuid.New())
	for i, err := range []error{err1, err2, err3, err4, err5, err6, err7} {
		if !errors.Is(err, pgoutbox.ErrClosed) {
			t.Errorf("call %d after Close: %v, want ErrClosed", i+1, err)
		}
	}
	// Enqueueing belongs to the caller's transaction and still works.
	enqueue(t, pool, newPublisher(t, s, "d"), msg("a", "1"))
}

// newInbox returns a PostgreSQL inbox on a table of its own.
func newInbox(t testing.TB) *pgstore.Store {
	t.Helper()
	p := newPool(t)
	table := testenv.Name(t, "inbox")
	ctx := testenv.Context(t, 30*time.Second)
	st, err := pgstore.New(p, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.Close()
		testenv.DropTables(t, st.Table())
	})
	return st
}
