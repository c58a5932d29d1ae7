package testsink

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// Pool connects to the test PostgreSQL, closing the pool when t ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Sink writes one row per handled message into its own table.
type Sink struct {
	// Pool is the PostgreSQL pool the rows are written with.
	Pool *pgxpool.Pool
	// Table is the sink's own table, created by New.
	Table string
	// TxFrom gives the transaction of a transactional inbox, when the
	// context carries one: the row is written in it. New sets
	// pgstore.TxFromContext.
	TxFrom func(context.Context) (pgx.Tx, bool)
	// FailAfterWrite makes the handler return an error after writing for
	// the messages it selects (the inbox test).
	FailAfterWrite func(*consumer.Message) bool

	dups  atomic.Int64
	calls atomic.Int64
}

// New creates the sink's table (dropped when t ends).
func New(t testing.TB, pool *pgxpool.Pool) *Sink {
	t.Helper()
	s := &Sink{Pool: pool, Table: testenv.Name(t, "rows"), TxFrom: pgstore.TxFromContext}
	ctx := context.Background()
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id uuid PRIMARY KEY, body bytea, handled_at timestamptz NOT NULL DEFAULT now())`, s.Table)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+s.Table) })
	return s
}

// ErrAfterWrite is what the handler returns when FailAfterWrite selects a
// message.
var ErrAfterWrite = errors.New("testsink: failing after the write")

// Handle inserts the message's row. A unique violation means the message's
// effect happened twice: it is counted (see Dups) and not an error.
func (s *Sink) Handle(ctx context.Context, m *consumer.Message) error {
	s.calls.Add(1)
	q := fmt.Sprintf(`INSERT INTO %s (id, body) VALUES ($1, $2)`, s.Table)
	var err error
	if tx, ok := s.txFrom(ctx); ok {
		_, err = tx.Exec(ctx, q, m.ID, m.Body)
	} else {
		_, err = s.Pool.Exec(ctx, q, m.ID, m.Body)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		s.dups.Add(1)
		return nil
	}
	if err != nil {
		return fmt.Errorf("testsink: insert %s: %w", m.ID, err)
	}
	if s.FailAfterWrite != nil && s.FailAfterWrite(m) {
		return ErrAfterWrite
	}
	return nil
}

func (s *Sink) txFrom(ctx context.Context) (pgx.Tx, bool) {
	if s.TxFrom == nil {
		return nil, false
	}
	return s.TxFrom(ctx)
}

// Count returns the number of rows.
func (s *Sink) Count(t testing.TB) int {
	t.Helper()
	var n int
	if err := s.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+s.Table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Has reports whether id has a row.
func (s *Sink) Has(t testing.TB, id uuid.UUID) bool {
	t.Helper()
	var ok bool
	if err := s.Pool.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM "+s.Table+" WHERE id = $1)", id).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// Dups returns how many inserts found their row already there.
func (s *Sink) Dups() int64 { return s.dups.Load() }

// Calls returns how often the handler ran.
func (s *Sink) Calls() int64 { return s.calls.Load() }

// WaitCount waits until the table has want rows (failing t after d).
func (s *Sink) WaitCount(t testing.TB, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n := s.Count(t)
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("%s has %d rows, want %d (duplicate effects: %d)", s.Table, n, want, s.Dups())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Chaos wraps h so that a fraction FailRate of its calls fail transiently
// and a fraction PanicRate panic, chosen from (message ID, attempt, seed);
// the first call always panics and the second always fails, so every run
// exercises both.
type Chaos struct {
	// FailRate is the fraction of calls that fail transiently.
	FailRate float64
	// PanicRate is the fraction of calls that panic.
	PanicRate float64
	// Seed varies the choice between runs.
	Seed string

	failed, panicked atomic.Int64
	calls            atomic.Int64
	mu               sync.Mutex
	seen             map[string]int
}

// ErrChaos is the transient failure Chaos injects.
var ErrChaos = errors.New("testsink: injected transient failure")

// Wrap returns the middleware.
func (c *Chaos) Wrap(next consumer.Handler) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		c.mu.Lock()
		if c.seen == nil {
			c.seen = map[string]int{}
		}
		k := m.ID.String()
		c.seen[k]++
		n := c.seen[k]
		c.mu.Unlock()
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%s/%d", c.Seed, k, n)
		x := float64(h.Sum64()%10000) / 10000
		switch c.calls.Add(1) {
		case 1:
			x = 0
		case 2:
			x = c.PanicRate
		}
		switch {
		case x < c.PanicRate:
			c.panicked.Add(1)
			panic(fmt.Sprintf("injected panic for %s", k))
		case x < c.PanicRate+c.FailRate:
			c.failed.Add(1)
			return ErrChaos
		}
		return next.Handle(ctx, m)
	})
}

// Injected returns how many failures and panics were injected.
func (c *Chaos) Injected() (failed, panicked int64) { return c.failed.Load(), c.panicked.Load() }

// Activity records when a handler chain was last entered or left.
type Activity struct {
	last atomic.Int64
}

// Wrap returns the middleware; put it outermost.
func (a *Activity) Wrap(next consumer.Handler) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		a.last.Store(time.Now().UnixNano())
		defer func() { a.last.Store(time.Now().UnixNano()) }()
		return next.Handle(ctx, m)
	})
}

// WaitQuiet waits until the chain has been idle for quiet (failing t after
// d): every delivery the broker had has then been handled.
func (a *Activity) WaitQuiet(t testing.TB, quiet, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Since(time.Unix(0, a.last.Load())) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("handler still busy after %v", d)
		}
		time.Sleep(quiet / 4)
	}
}

// Running is a consumer loop started by [Start].
type Running struct {
	cancel context.CancelFunc
	done   chan error
}

// Start runs run (a consumer's Run) in a goroutine until [Running.Stop]
// or the end of the test, which also fails the test if Run returned an
// error or did not return within 30 s of being stopped.
func Start(t testing.TB, run func(context.Context) error) *Running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	t.Cleanup(func() { r.Stop(t) })
	return r
}

// Stop stops the loop and waits for Run to return; it does nothing the
// second time.
func (r *Running) Stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return after shutdown")
	}
}
