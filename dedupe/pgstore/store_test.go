package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

func newKey() dedupe.Key { return dedupe.Key{Scope: "pgstore", ID: uuid.New()} }

func mustClaim(t *testing.T, s *pgstore.Store, key dedupe.Key, lease time.Duration, want dedupe.Status) dedupe.Claim {
	t.Helper()
	c, err := s.Claim(testenv.Context(t, 10*time.Second), key, lease)
	if err != nil {
		t.Fatalf("Claim(%s): %v", key, err)
	}
	if c.Status != want {
		t.Fatalf("Claim(%s) = %s, want %s", key, c.Status, want)
	}
	return c
}

// TestBroken checks the errors of a store that cannot reach its database: a
// closed pool, a server address nothing listens on, a closed store.
func TestBroken(t *testing.T) {
	cases := []struct {
		name  string
		store func(t *testing.T) *pgstore.Store
		want  error
	}{
		{"closed pool", func(t *testing.T) *pgstore.Store {
			pool := newPool(t, nil, 0)
			s := newStore(t, pool)
			pool.Close()
			return s
		}, nil},
		{"unreachable server", func(t *testing.T) *pgstore.Store {
			s, err := pgstore.New(unreachablePool(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, nil},
		{"closed store", func(t *testing.T) *pgstore.Store {
			s := newStore(t, newPool(t, nil, 0))
			_ = s.Close()
			return s
		}, dedupe.ErrClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store(t)
			ctx := testenv.Context(t, 10*time.Second)
			key := newKey()
			forged := dedupe.Claim{Key: key, Status: dedupe.Acquired, Token: 1}
			c, err := s.Claim(ctx, key, time.Minute)
			if err == nil || c.Status != 0 {
				t.Fatalf("Claim = %s, %v; want an error and no status", c.Status, err)
			}
			ran := false
			pc, perr := s.Process(ctx, key, time.Minute, 0, func(context.Context) error { ran = true; return nil })
			if perr == nil || pc.Status != 0 || ran {
				t.Fatalf("Process = %s, %v, handler ran %v; want an error, no status, no handler", pc.Status, perr, ran)
			}
			_, cerr := s.Cleanup(ctx, 0)
			errs := []error{err, s.Complete(ctx, forged, 0), s.Release(ctx, forged), perr, cerr, s.Migrate(ctx)}
			if tc.name == "closed store" {
				errs = errs[:5] // Migrate needs no open store
			}
			for i, err := range errs {
				if err == nil {
					t.Fatalf("call %d: nil error", i)
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("call %d: %v, want one wrapping %v", i, err, tc.want)
				}
				if errors.Is(err, dedupe.ErrLeaseLost) {
					t.Fatalf("call %d: %v: a broken store must not claim to know the lease", i, err)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	pool := newPool(t, nil, 0)
	bad := []struct {
		option string
		o      pgstore.Option
	}{
		{"WithTable", pgstore.WithTable("")},
		{"WithTable", pgstore.WithTable(`a"b`)},
		{"WithTable", pgstore.WithTable("a.b.c")},
		{"WithTable", pgstore.WithTable("1abc")},
		{"WithTable", pgstore.WithTable(strings.Repeat("t", 64))},
		{"WithDefaultLease", pgstore.WithDefaultLease(0)},
		{"WithDefaultRetention", pgstore.WithDefaultRetention(-2 * time.Second)},
		{"WithJanitor", pgstore.WithJanitor(0, nil)},
	}
	for _, b := range bad {
		_, err := pgstore.New(pool, b.o)
		if err == nil {
			t.Errorf("%s: New accepted an invalid value", b.option)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "pgstore: "+b.option+"(") || strings.Count(msg, "pgstore:") != 1 {
			t.Errorf("%s: error %q does not start with %q", b.option, msg, "pgstore: "+b.option+"(")
		}
	}
	if _, err := pgstore.New(nil); err == nil {
		t.Error("New(nil pool) accepted it")
	}
	s, err := pgstore.New(pool, pgstore.WithTable("myschema.events_dedupe"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Table(), `"myschema"."events_dedupe"`; got != want {
		t.Errorf("Table() = %s, want %s", got, want)
	}
}

func TestDDL(t *testing.T) {
	def, err := pgstore.DDL("")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CREATE SEQUENCE IF NOT EXISTS "uuidforge_dedupe_token_seq"`,
		`CREATE TABLE IF NOT EXISTS "uuidforge_dedupe" (`,
		`PRIMARY KEY (scope, id)`,
		`CREATE INDEX IF NOT EXISTS "uuidforge_dedupe_expires_idx"`,
	} {
		if !strings.Contains(def, want) {
			t.Errorf("DDL(\"\") lacks %q:\n%s", want, def)
		}
	}
	if _, err := pgstore.DDL("no spaces"); err == nil {
		t.Error(`DDL("no spaces") accepted it`)
	}
	// Derived names of a long table stay within 63 bytes and distinct.
	a, b := strings.Repeat("a", 60)+"_1", strings.Repeat("a", 60)+"_2"
	da, _ := pgstore.DDL(a)
	db, _ := pgstore.DDL(b)
	seqOf := func(ddl string) string {
		line := strings.SplitN(ddl, "\n", 2)[0]
		return strings.Trim(strings.TrimPrefix(line, "CREATE SEQUENCE IF NOT EXISTS "), `";`)
	}
	if sa, sb := seqOf(da), seqOf(db); len(sa) > 63 || len(sb) > 63 || sa == sb {
		t.Errorf("sequence names %q and %q: want distinct names of at most 63 bytes", sa, sb)
	}
	sch, err := pgstore.DDL("app.dedupe")
	if err != nil || !strings.Contains(sch, `"app"."dedupe_token_seq"`) || !strings.Contains(sch, `ON "app"."dedupe"`) {
		t.Errorf("DDL(app.dedupe) = %v:\n%s", err, sch)
	}
}

// TestMigrateConcurrent: processes migrating the same table at once all
// succeed (the advisory lock), and migrating again changes nothing.
func TestMigrateConcurrent(t *testing.T) {
	pool := newPool(t, nil, 0)
	table := testenv.Name(t, "dd")
	t.Cleanup(func() { testenv.DropTables(t, pgx.Identifier{table}.Sanitize()) })
	ctx := testenv.Context(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			s, err := pgstore.New(pool, pgstore.WithTable(table))
			if err == nil {
				err = s.Migrate(ctx)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	s, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate on a migrated table: %v", err)
	}
	c := mustClaim(t, s, newKey(), time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRows checks the row each call leaves, by the database clock.
func TestRows(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 10*time.Second)
	row := func(key dedupe.Key) (state string, token int64, left *time.Duration) {
		t.Helper()
		var secs *float64
		err := pool.QueryRow(ctx, "SELECT state, token, extract(epoch FROM expires_at - clock_timestamp())::float8 FROM "+s.Table()+" WHERE scope = $1 AND id = $2",
			key.Scope, key.ID).Scan(&state, &token, &secs)
		if err != nil {
			t.Fatalf("row %s: %v", key, err)
		}
		if secs != nil {
			d := time.Duration(*secs * float64(time.Second))
			left = &d
		}
		return state, token, left
	}
	near := func(what string, got *time.Duration, want time.Duration) {
		t.Helper()
		if got == nil || *got > want || *got < want-5*time.Second {
			t.Fatalf("%s: expiry in %v, want about %v", what, got, want)
		}
	}
	key := newKey()
	c := mustClaim(t, s, key, time.Minute, dedupe.Acquired)
	st, tok, left := row(key)
	if st != "leased" || uint64(tok) != c.Token {
		t.Fatalf("after claim: %s token %d, want leased token %d", st, tok, c.Token)
	}
	near("lease", left, time.Minute)
	if err := s.Complete(ctx, c, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	st, _, left = row(key)
	if st != "done" {
		t.Fatalf("after complete: %s", st)
	}
	near("retention", left, 2*time.Hour)

	key2 := newKey()
	c2 := mustClaim(t, s, key2, time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, c2, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	if st, _, left := row(key2); st != "done" || left != nil {
		t.Fatalf("after Complete(Forever): %s, expiry in %v; want done with a NULL expiry", st, left)
	}

	key3 := newKey()
	c3 := mustClaim(t, s, key3, time.Minute, dedupe.Acquired)
	if err := s.Release(ctx, c3); err != nil {
		t.Fatal(err)
	}
	if st, tok, _ := row(key3); st != "released" || uint64(tok) != c3.Token {
		t.Fatalf("after release: %s token %d", st, tok)
	}
}

// TestCleanup deletes expired completions, released keys and ended leases
// in batches, and keeps live leases, retained and forever keys.
func TestCleanup(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	done := func(retention time.Duration) dedupe.Key {
		k := newKey()
		c := mustClaim(t, s, k, time.Minute, dedupe.Acquired)
		if err := s.Complete(ctx, c, retention); err != nil {
			t.Fatal(err)
		}
		return k
	}
	var expired []dedupe.Key
	for range 3 {
		expired = append(expired, done(time.Millisecond))
	}
	rel := newKey()
	if err := s.Release(ctx, mustClaim(t, s, rel, time.Minute, dedupe.Acquired)); err != nil {
		t.Fatal(err)
	}
	ended := newKey()
	mustClaim(t, s, ended, time.Millisecond, dedupe.Acquired)
	expired = append(expired, rel, ended)

	forever, retained := done(dedupe.Forever), done(time.Hour)
	live := newKey()
	mustClaim(t, s, live, time.Minute, dedupe.Acquired)
	time.Sleep(20 * time.Millisecond)

	n, err := s.Cleanup(ctx, 2) // three batches: 2, 2, 1
	if err != nil || n != int64(len(expired)) {
		t.Fatalf("Cleanup = %d, %v; want %d", n, err, len(expired))
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+s.Table()).Scan(&rows); err != nil || rows != 3 {
		t.Fatalf("rows left = %d, %v; want 3", rows, err)
	}
	mustClaim(t, s, forever, time.Minute, dedupe.Duplicate)
	mustClaim(t, s, retained, time.Minute, dedupe.Duplicate)
	mustClaim(t, s, live, time.Minute, dedupe.InFlight)
	for _, k := range expired {
		mustClaim(t, s, k, time.Minute, dedupe.Acquired)
	}
	if n, err := s.Cleanup(ctx, 0); err != nil || n != 0 {
		t.Fatalf("second Cleanup = %d, %v; want 0", n, err)
	}
	if _, err := s.Cleanup(ctx, -1); err == nil {
		t.Fatal("Cleanup(-1) accepted it")
	}
}

// TestCleanupSkipsLocked: a row another transaction holds is left alone
// without waiting for it, and claims of other keys go on meanwhile.
func TestCleanupSkipsLocked(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	held, free := newKey(), newKey()
	for _, k := range []dedupe.Key{held, free} {
		if err := s.Complete(ctx, mustClaim(t, s, k, time.Minute, dedupe.Acquired), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+s.Table()+" WHERE scope = $1 AND id = $2 FOR UPDATE", held.Scope, held.ID); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := s.Cleanup(cctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("Cleanup with one row locked = %d, %v; want 1 (the free row), no wait", n, err)
	}
	mustClaim(t, s, newKey(), time.Minute, dedupe.Acquired)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Cleanup(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Cleanup after the lock ended = %d, %v; want 1", n, err)
	}
}

// TestJanitor: the background janitor deletes expired rows, reports
// nothing when all goes well, and stops with Close.
func TestJanitor(t *testing.T) {
	cnt := &counter{}
	pool := newPool(t, cnt, 0)
	var errs atomic.Int32
	s := newStore(t, pool, pgstore.WithJanitor(20*time.Millisecond, func(err error) {
		errs.Add(1)
		t.Errorf("janitor: %v", err)
	}))
	ctx := testenv.Context(t, 20*time.Second)
	key := newKey()
	if err := s.Complete(ctx, mustClaim(t, s, key, time.Minute, dedupe.Acquired), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+s.Table()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not delete the expired row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := cnt.stmts.Load()
	time.Sleep(100 * time.Millisecond)
	if after := cnt.stmts.Load(); after != before {
		t.Fatalf("%d statements after Close: the janitor still runs", after-before)
	}
}

// TestCompleteTx: a caller-managed transaction commits or rolls back the
// completion with its own writes.
func TestCompleteTx(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	fx := pgx.Identifier{testenv.Name(t, "fx")}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+fx+" (id uuid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, fx) })
	has := func(k dedupe.Key) bool {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+fx+" WHERE id = $1)", k.ID).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	work := func(c dedupe.Claim, commit bool) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO "+fx+" (id) VALUES ($1)", c.Key.ID); err != nil {
			return err
		}
		if err := s.CompleteTx(ctx, tx, c, 0); err != nil {
			return err
		}
		if !commit {
			return tx.Rollback(ctx)
		}
		return tx.Commit(ctx)
	}

	key := newKey()
	c := mustClaim(t, s, key, time.Minute, dedupe.Acquired)
	if err := work(c, false); err != nil {
		t.Fatal(err)
	}
	if has(key) {
		t.Fatal("rolled-back write is present")
	}
	mustClaim(t, s, key, time.Minute, dedupe.InFlight) // still ours, not done
	if err := work(c, true); err != nil {
		t.Fatal(err)
	}
	if !has(key) {
		t.Fatal("committed write is absent")
	}
	mustClaim(t, s, key, time.Minute, dedupe.Duplicate)

	// A stale token: the transaction must roll back.
	key2 := newKey()
	old := mustClaim(t, s, key2, time.Millisecond, dedupe.Acquired)
	time.Sleep(5 * time.Millisecond)
	cur := mustClaim(t, s, key2, time.Minute, dedupe.Acquired)
	if err := work(old, true); !errors.Is(err, dedupe.ErrLeaseLost) {
		t.Fatalf("CompleteTx with a stale token: %v, want ErrLeaseLost", err)
	}
	if has(key2) {
		t.Fatal("a write whose lease was lost is present")
	}
	if err := s.Complete(ctx, cur, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteTx(ctx, nil, cur, 0); err == nil {
		t.Fatal("CompleteTx(nil tx) accepted it")
	}
}

// TestProcessPanic: a panicking handler rolls back, releases the claim and
// panics on.
func TestProcessPanic(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	key := newKey()
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		_, _ = s.Process(ctx, key, time.Minute, 0, func(ctx context.Context) error {
			tx, _ := pgstore.TxFromContext(ctx)
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Error(err)
			}
			panic("boom")
		})
	}()
	mustClaim(t, s, key, time.Minute, dedupe.Acquired)
	if _, ok := pgstore.TxFromContext(ctx); ok {
		t.Fatal("TxFromContext found a transaction in a plain context")
	}
	if _, err := s.Process(ctx, newKey(), time.Minute, 0, nil); err == nil {
		t.Fatal("Process(nil handler) accepted it")
	}
	if _, err := s.Process(ctx, newKey(), time.Minute, -time.Hour, func(context.Context) error { return nil }); !errors.Is(err, dedupe.ErrInvalidDuration) {
		t.Fatalf("Process with a negative retention: %v, want ErrInvalidDuration", err)
	}
}

// TestWrapping checks that errors.Is sees the sentinels through the store's
// wrapping and one more layer of the caller's.
func TestWrapping(t *testing.T) {
	s := newStore(t, newPool(t, nil, 0))
	ctx := testenv.Context(t, 10*time.Second)
	err := s.Complete(ctx, dedupe.Claim{Key: newKey(), Status: dedupe.Acquired, Token: 7}, 0)
	if !errors.Is(fmt.Errorf("handler: %w", err), dedupe.ErrLeaseLost) {
		t.Fatalf("%v does not wrap ErrLeaseLost", err)
	}
	_, err = s.Claim(ctx, dedupe.Key{ID: uuid.New()}, 0)
	if !errors.Is(fmt.Errorf("handler: %w", err), dedupe.ErrInvalidKey) {
		t.Fatalf("%v does not wrap ErrInvalidKey", err)
	}
}

// TestRoundTrips checks that each call is one statement and one round trip
// once the connection has prepared it.
func TestRoundTrips(t *testing.T) {
	cnt := &counter{}
	pool := newPool(t, cnt, 1)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 10*time.Second)
	// Warm up: every statement once, so the connection has prepared it.
	w := newKey()
	c := mustClaim(t, s, w, time.Minute, dedupe.Acquired)
	mustClaim(t, s, w, time.Minute, dedupe.InFlight)
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	c = mustClaim(t, s, w, time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, w, time.Minute, dedupe.Duplicate)

	measure := func(what string, f func()) {
		t.Helper()
		w0, s0 := cnt.writes.Load(), cnt.stmts.Load()
		f()
		if w, n := cnt.writes.Load()-w0, cnt.stmts.Load()-s0; w != 1 || n != 1 {
			t.Errorf("%s: %d writes, %d statements; want one round trip", what, w, n)
		}
	}
	key := newKey()
	measure("claim", func() { c = mustClaim(t, s, key, time.Minute, dedupe.Acquired) })
	measure("claim in flight", func() { mustClaim(t, s, key, time.Minute, dedupe.InFlight) })
	measure("release", func() {
		if err := s.Release(ctx, c); err != nil {
			t.Fatal(err)
		}
	})
	measure("claim released", func() { c = mustClaim(t, s, key, time.Minute, dedupe.Acquired) })
	measure("complete", func() {
		if err := s.Complete(ctx, c, 0); err != nil {
			t.Fatal(err)
		}
	})
	measure("claim duplicate", func() { mustClaim(t, s, key, time.Minute, dedupe.Duplicate) })
}

// TestConcurrentReclaim: many claims at once of a key whose row exists and
// is claimable (released, lease ended, retention ended) — exactly one
// acquires, the others are in flight, none is told duplicate. This is the
// case where a claim's snapshot may show the row before another claim took
// it.
func TestConcurrentReclaim(t *testing.T) {
	s := newStore(t, newPool(t, nil, 0))
	ctx := testenv.Context(t, 30*time.Second)
	prepare := map[string]func(k dedupe.Key){
		"released": func(k dedupe.Key) {
			if err := s.Release(ctx, mustClaim(t, s, k, time.Minute, dedupe.Acquired)); err != nil {
				t.Fatal(err)
			}
		},
		"lease ended": func(k dedupe.Key) {
			mustClaim(t, s, k, time.Millisecond, dedupe.Acquired)
			time.Sleep(5 * time.Millisecond)
		},
		"retention ended": func(k dedupe.Key) {
			if err := s.Complete(ctx, mustClaim(t, s, k, time.Minute, dedupe.Acquired), time.Millisecond); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		},
	}
	for name, prep := range prepare {
		t.Run(name, func(t *testing.T) {
			for range 3 {
				key := newKey()
				prep(key)
				const n = 32
				var (
					wg       sync.WaitGroup
					start    = make(chan struct{})
					acquired atomic.Int32
					inFlight atomic.Int32
				)
				for range n {
					wg.Go(func() {
						<-start
						c, err := s.Claim(ctx, key, time.Minute)
						switch {
						case err != nil:
							t.Errorf("Claim: %v", err)
						case c.Status == dedupe.Acquired:
							acquired.Add(1)
						case c.Status == dedupe.InFlight:
							inFlight.Add(1)
						default:
							t.Errorf("Claim = %s", c.Status)
						}
					})
				}
				close(start)
				wg.Wait()
				if a, f := acquired.Load(), inFlight.Load(); a != 1 || f != n-1 {
					t.Fatalf("%d acquired, %d in flight; want 1 and %d", a, f, n-1)
				}
			}
		})
	}
}

// TestBatchRoundTrips: ClaimBatch, CompleteBatch and ReleaseBatch are one
// statement and one round trip whatever the batch size; ProcessBatch of n
// messages is 4 round trips (claim, BEGIN, the completion, COMMIT) plus,
// for each of the k messages whose handler uses the transaction, one for
// its savepoint (the previous one's RELEASE goes with it): 4 + k besides
// the handlers' own, and one more when the last of them fails.
func TestBatchRoundTrips(t *testing.T) {
	cnt := &counter{}
	pool := newPool(t, cnt, 1)
	s := newStore(t, pool)
	fx := newEffects(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	if _, err := pool.Exec(ctx, fx.insertSQL(), uuid.New()); err != nil { // prepares it
		t.Fatal(err)
	}
	keys := func(n int) []dedupe.Key {
		ks := make([]dedupe.Key, n)
		for i := range ks {
			ks[i] = newKey()
		}
		return ks
	}
	// Warm up: every statement once, so the connection has prepared it.
	warm, err := s.ClaimBatch(ctx, keys(2), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReleaseBatch(ctx, warm[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CompleteBatch(ctx, warm[1:], 0); err != nil {
		t.Fatal(err)
	}
	measure := func(what string, want int64, f func() error) {
		t.Helper()
		w0 := cnt.writes.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if w := cnt.writes.Load() - w0; w != want {
			t.Errorf("%s: %d round trips, want %d", what, w, want)
		}
	}
	var claims []dedupe.Claim
	measure("claim 64", 1, func() error { claims, err = s.ClaimBatch(ctx, keys(64), time.Minute); return err })
	measure("release 32", 1, func() error { _, err := s.ReleaseBatch(ctx, claims[:32]); return err })
	measure("complete 32", 1, func() error { _, err := s.CompleteBatch(ctx, claims[32:], 0); return err })
	again := make([]dedupe.Key, len(claims))
	for i, c := range claims {
		again[i] = c.Key
	}
	measure("claim 64 again (32 released, 32 done)", 1, func() error {
		cs, err := s.ClaimBatch(ctx, again, time.Minute)
		for i, c := range cs {
			if i < 32 && c.Status != dedupe.Acquired || i >= 32 && c.Status != dedupe.Duplicate {
				return fmt.Errorf("claim %d = %s", i, c.Status)
			}
		}
		return err
	})
	measure("process 16", 4, func() error {
		res, err := s.ProcessBatch(ctx, keys(16), time.Minute, 0, func(context.Context, int) error { return nil })
		for _, r := range res {
			if r.Err != nil || !r.Claim.Acquired() {
				return fmt.Errorf("result %s, %v", r.Claim.Status, r.Err)
			}
		}
		return err
	})
	// Members 3, 7, 11 and 15 write a row (one round trip each); with
	// failLast, member 15 fails after writing.
	writers := func(failLast bool) func() error {
		return func() error {
			ks := keys(16)
			res, err := s.ProcessBatch(ctx, ks, time.Minute, 0, func(ctx context.Context, i int) error {
				if i%4 != 3 {
					return nil
				}
				tx, _ := pgstore.TxFromContext(ctx)
				if _, err := tx.Exec(ctx, fx.insertSQL(), ks[i].ID); err != nil {
					return err
				}
				if failLast && i == 15 {
					return errHandler
				}
				return nil
			})
			for i, r := range res {
				if (r.Err != nil) != (failLast && i == 15) || !r.Claim.Acquired() {
					return fmt.Errorf("result %d: %s, %v", i, r.Claim.Status, r.Err)
				}
			}
			return err
		}
	}
	measure("process 16, 4 writing", 4+2*4, writers(false))
	// One more: the release of member 15's claim after the commit.
	measure("process 16, 4 writing, the last failing", 4+2*4+1+1, writers(true))
}

// TestProcessBatchIgnoredError: a member whose fn returns nil after a
// statement that aborted the transaction is rolled back to its savepoint
// with an error wrapping ErrRolledBack; the members before and after it
// commit. The last member too.
func TestProcessBatchIgnoredError(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	fx := pgx.Identifier{testenv.Name(t, "fx")}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+fx+" (id uuid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, fx) })
	has := func(k dedupe.Key) bool {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+fx+" WHERE id = $1)", k.ID).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, bad := range []int{1, 3} {
		t.Run(fmt.Sprintf("member %d of 4", bad), func(t *testing.T) {
			keys := []dedupe.Key{newKey(), newKey(), newKey(), newKey()}
			res, err := s.ProcessBatch(ctx, keys, time.Minute, 0, func(ctx context.Context, i int) error {
				tx, _ := pgstore.TxFromContext(ctx)
				if _, err := tx.Exec(ctx, "INSERT INTO "+fx+" (id) VALUES ($1)", keys[i].ID); err != nil {
					return err
				}
				if i == bad {
					_, _ = tx.Exec(ctx, "SELECT 1/0") // aborts the transaction; ignored
				}
				return nil
			})
			if err != nil {
				t.Fatalf("ProcessBatch: %v", err)
			}
			for i, r := range res {
				if i == bad {
					if !errors.Is(r.Err, dedupe.ErrRolledBack) || !strings.Contains(r.Err.Error(), "25P02") {
						t.Fatalf("member %d: %v, want ErrRolledBack (25P02)", i, r.Err)
					}
					if has(keys[i]) {
						t.Fatalf("member %d's write was committed", i)
					}
					mustClaim(t, s, keys[i], time.Minute, dedupe.Acquired) // released
					continue
				}
				if r.Err != nil || !has(keys[i]) {
					t.Fatalf("member %d: %v, row present %v; want committed", i, r.Err, has(keys[i]))
				}
				mustClaim(t, s, keys[i], time.Minute, dedupe.Duplicate)
			}
		})
	}
}

// TestConcurrentReclaimBatch is TestConcurrentReclaim with batches: many
// batches at once holding a key whose row is claimable acquire it once, and
// none is told duplicate (the statement's snapshot can be older than the
// row).
func TestConcurrentReclaimBatch(t *testing.T) {
	s := newStore(t, newPool(t, nil, 0))
	ctx := testenv.Context(t, 30*time.Second)
	for round := range 3 {
		var keys []dedupe.Key
		for i := range 6 {
			k := newKey()
			switch i % 3 {
			case 0: // released
				if err := s.Release(ctx, mustClaim(t, s, k, time.Minute, dedupe.Acquired)); err != nil {
					t.Fatal(err)
				}
			case 1: // retention ended
				if err := s.Complete(ctx, mustClaim(t, s, k, time.Minute, dedupe.Acquired), time.Millisecond); err != nil {
					t.Fatal(err)
				}
			case 2: // lease ended
				mustClaim(t, s, k, time.Millisecond, dedupe.Acquired)
			}
			keys = append(keys, k)
		}
		time.Sleep(5 * time.Millisecond)
		const n = 16
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			mu    sync.Mutex
			wins  = map[dedupe.Key]int{}
		)
		for g := range n {
			wg.Go(func() {
				order := append([]dedupe.Key(nil), keys...)
				if g%2 == 1 {
					slices.Reverse(order)
				}
				<-start
				claims, err := s.ClaimBatch(ctx, order, time.Minute)
				if err != nil {
					t.Errorf("ClaimBatch: %v", err)
					return
				}
				for _, c := range claims {
					switch c.Status {
					case dedupe.Acquired:
						mu.Lock()
						wins[c.Key]++
						mu.Unlock()
					case dedupe.InFlight:
					default:
						t.Errorf("ClaimBatch of a claimable key = %s", c.Status)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		for i, k := range keys {
			if wins[k] != 1 {
				t.Fatalf("round %d: key %d acquired %d times, want once", round, i, wins[k])
			}
		}
	}
}
