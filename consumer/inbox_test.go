package consumer_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// newInbox returns a PostgreSQL inbox on its own table in pool's database.
func newInbox(t *testing.T, pool *pgxpool.Pool) *pgstore.Store {
	t.Helper()
	table := testenv.Name(t, "dd")
	s, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		dropTables(t, table)
	})
	if err := s.Migrate(testenv.Context(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return s
}

// dropTables drops tables by their plain names.
func dropTables(t *testing.T, names ...string) {
	t.Helper()
	for i, n := range names {
		names[i] = pgx.Identifier{n}.Sanitize()
	}
	testenv.DropTables(t, names...)
}

// TestInboxInFlightUntil: a message whose claim another consumer holds waits
// until that holder's lease ends, as the store reports it, not for a guess.
func TestInboxInFlightUntil(t *testing.T) {
	store := newInbox(t, testsink.Pool(t))
	ctx := testenv.Context(t, 10*time.Second)
	m := msg()
	held, err := store.Claim(ctx, dedupe.Key{Scope: "test-scope", ID: m.ID}, time.Minute)
	if err != nil || !held.Acquired() {
		t.Fatalf("Claim = %s, %v", held.Status, err)
	}
	h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		t.Error("handler called while another consumer holds the claim")
		return nil
	}))
	err = h.Handle(ctx, m)
	var ife *consumer.InFlightError
	if !errors.As(err, &ife) {
		t.Fatalf("Handle = %v, want an InFlightError", err)
	}
	if d := ife.Until.Sub(held.Until); d < -time.Second || d > time.Second {
		t.Fatalf("InFlightError.Until = %v, want the holder's lease end %v", ife.Until, held.Until)
	}
}

// TestInboxCommitFailure: a handler that returns nil but whose own writes
// make the transaction fail (a deferred foreign key checked at COMMIT, a
// statement whose error it ignored) fails like any handler: retried up to
// MaxAttempts, then dead-lettered with the reason. It is not a store
// outage, which would be retried without limit.
func TestInboxCommitFailure(t *testing.T) {
	pool := testsink.Pool(t)
	store := newInbox(t, pool)
	parent, child := testenv.Name(t, "parent"), testenv.Name(t, "child")
	t.Cleanup(func() { dropTables(t, child, parent) })
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := pool.Exec(ctx, `CREATE TABLE `+pgx.Identifier{parent}.Sanitize()+` (id int PRIMARY KEY);
CREATE TABLE `+pgx.Identifier{child}.Sanitize()+` (
	id uuid PRIMARY KEY,
	parent int NOT NULL REFERENCES `+pgx.Identifier{parent}.Sanitize()+` (id) DEFERRABLE INITIALLY DEFERRED
)`); err != nil {
		t.Fatal(err)
	}
	insertChild := "INSERT INTO " + pgx.Identifier{child}.Sanitize() + " (id, parent) VALUES ($1, 42)"

	cases := []struct {
		name, reason string
		handle       func(ctx context.Context, tx pgx.Tx, m *consumer.Message) error
	}{
		{"deferred foreign key", "SQLSTATE 23503", func(ctx context.Context, tx pgx.Tx, m *consumer.Message) error {
			_, err := tx.Exec(ctx, insertChild, m.ID) // the parent is missing: COMMIT fails
			return err
		}},
		{"ignored statement error", "SQLSTATE 25P02", func(ctx context.Context, tx pgx.Tx, m *consumer.Message) error {
			_, _ = tx.Exec(ctx, "SELECT 1/0") // aborts the transaction; the handler ignores it
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			h := newDedupe(t, store)(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				calls.Add(1)
				tx, ok := pgstore.TxFromContext(ctx)
				if !ok {
					t.Error("no inbox transaction in the handler's context")
					return nil
				}
				return tc.handle(ctx, tx, m)
			}))
			p := &consumer.Processor{Handler: h, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
			stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m := msg()
			outcome, err := p.Process(stop, context.Background(), m)
			if outcome != consumer.OutcomeDeadLetter {
				t.Fatalf("outcome %s after %d handler calls (%v); want dead letter after 3", outcome, calls.Load(), err)
			}
			if n := calls.Load(); n != 3 {
				t.Fatalf("handler called %d times, want MaxAttempts = 3", n)
			}
			if !errors.Is(err, dedupe.ErrRolledBack) || consumer.Waiting(err) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("dead-letter reason %v: want ErrRolledBack mentioning %s, not a waiting error", err, tc.reason)
			}
			// Nothing was committed and the claim was released.
			c, err := store.Claim(ctx, dedupe.Key{Scope: "test-scope", ID: m.ID}, time.Minute)
			if err != nil || !c.Acquired() {
				t.Fatalf("Claim after the dead letter = %s, %v; want acquired", c.Status, err)
			}
		})
	}
}

// TestInboxOutageWaits: when the database connection is lost while the
// handler runs, the failed commit is a store outage: the message waits,
// however small MaxAttempts is, and is processed once the database is back.
func TestInboxOutageWaits(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(proxy.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := newInbox(t, pool)

	var calls atomic.Int32
	h := newDedupe(t, store, consumer.WithLease(time.Second))(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if calls.Add(1) == 1 {
			proxy.SetDown(true) // the connection is cut before the commit
			time.AfterFunc(500*time.Millisecond, func() { proxy.SetDown(false) })
		}
		return nil
	}))
	proc := &consumer.Processor{Handler: h, MaxAttempts: 1, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	stop, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	outcome, err := proc.Process(stop, context.Background(), msg())
	if outcome != consumer.OutcomeAck {
		t.Fatalf("outcome %s (%v) after %d handler calls; want ack once the database is back", outcome, err, calls.Load())
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler called %d times, want 2 (the cut attempt, then the one that committed)", n)
	}
}
