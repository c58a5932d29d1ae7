package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// effects is a table handlers write one row per key into.
type effects struct {
	pool *pgxpool.Pool
	name string // quoted
}

func newEffects(t testing.TB, pool *pgxpool.Pool) *effects {
	t.Helper()
	fx := &effects{pool: pool, name: pgx.Identifier{testenv.Name(t, "fx")}.Sanitize()}
	if _, err := pool.Exec(testenv.Context(t, 10*time.Second), "CREATE TABLE "+fx.name+" (id uuid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, fx.name) })
	return fx
}

func (fx *effects) insertSQL() string { return "INSERT INTO " + fx.name + " (id) VALUES ($1)" }

func (fx *effects) has(t testing.TB, k dedupe.Key) bool {
	t.Helper()
	var ok bool
	err := fx.pool.QueryRow(testenv.Context(t, 10*time.Second), "SELECT EXISTS (SELECT 1 FROM "+fx.name+" WHERE id = $1)", k.ID).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

var errHandler = errors.New("handler failed")

// member is what one member's fn does with the transaction, and what must
// come of it.
type member struct {
	name string
	// do runs as fn, with the context's transaction and the member's key.
	do func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error
	// wantErr: nil, errHandler or dedupe.ErrRolledBack (with 25P02).
	wantErr error
	// wantRow: whether the member's row must be committed.
	wantRow bool
}

// runMembers runs ms as one ProcessBatch and checks each member's result,
// its committed row and its claim (completed, or released).
func runMembers(t *testing.T, s *pgstore.Store, fx *effects, ms []member) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	keys := make([]dedupe.Key, len(ms))
	for i := range keys {
		keys[i] = newKey()
	}
	res, err := s.ProcessBatch(ctx, keys, time.Minute, 0, func(ctx context.Context, i int) error {
		tx, ok := pgstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no transaction in the context")
		}
		return ms[i].do(ctx, tx, keys[i])
	})
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	for i, m := range ms {
		r := res[i]
		switch {
		case m.wantErr == nil && r.Err != nil:
			t.Errorf("member %d (%s): %v, want no error", i, m.name, r.Err)
		case m.wantErr != nil && !errors.Is(r.Err, m.wantErr):
			t.Errorf("member %d (%s): %v, want %v", i, m.name, r.Err, m.wantErr)
		case m.wantErr == dedupe.ErrRolledBack && !strings.Contains(r.Err.Error(), "25P02"):
			t.Errorf("member %d (%s): %v, want 25P02", i, m.name, r.Err)
		}
		if got := fx.has(t, keys[i]); got != m.wantRow {
			t.Errorf("member %d (%s): row committed %v, want %v", i, m.name, got, m.wantRow)
		}
		want := dedupe.Duplicate
		if m.wantErr != nil {
			want = dedupe.Acquired // released
		}
		if c, err := s.Claim(ctx, keys[i], time.Minute); err != nil || c.Status != want {
			t.Errorf("member %d (%s): claim after the batch = %s, %v; want %s", i, m.name, c.Status, err, want)
		}
	}
}

// TestProcessBatchMembers: members that use the transaction and members
// that do not, in every order, with successes, failures and errors a
// member ignored; only the rows of the members that succeeded commit.
func TestProcessBatchMembers(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	fx := newEffects(t, pool)
	write := func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
		_, err := tx.Exec(ctx, fx.insertSQL(), k.ID)
		return err
	}
	var (
		none      = member{"no use", func(context.Context, pgx.Tx, dedupe.Key) error { return nil }, nil, false}
		fail      = member{"fails, no use", func(context.Context, pgx.Tx, dedupe.Key) error { return errHandler }, errHandler, false}
		writes    = member{"writes", write, nil, true}
		writeFail = member{"writes, fails", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			if err := write(ctx, tx, k); err != nil {
				return err
			}
			return errHandler
		}, errHandler, false}
		swallow = member{"writes, ignores an aborting error", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			if err := write(ctx, tx, k); err != nil {
				return err
			}
			_, _ = tx.Exec(ctx, "SELECT 1/0") // aborts the transaction; ignored
			return nil
		}, dedupe.ErrRolledBack, false}
		swallowFail = member{"ignores an aborting error, fails", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			_, _ = tx.Exec(ctx, "SELECT 1/0")
			return errHandler
		}, errHandler, false}
	)
	for _, c := range []struct {
		name string
		ms   []member
	}{
		{"none uses the transaction", []member{none, none, none}},
		{"some use it", []member{none, writes, none, none, writes, writes, none}},
		{"a failure after writing", []member{writes, writeFail, writes, none, writeFail}},
		{"a failure without writing", []member{writes, fail, writes, fail, none}},
		{"failures only", []member{fail, writeFail, fail}},
		{"an ignored error, then a member that does not use it, then one that does", []member{writes, swallow, none, writes}},
		{"an ignored error, then members that do not use it", []member{writes, swallow, none, fail, none}},
		{"an ignored error by the only user", []member{none, swallow, none}},
		{"an ignored error last", []member{none, writes, swallow}},
		{"an ignored error, then a failure", []member{swallow, writeFail, swallow, fail, swallow}},
		{"an ignored error and a failure", []member{writes, swallowFail, writes, swallowFail}},
	} {
		t.Run(c.name, func(t *testing.T) { runMembers(t, s, fx, c.ms) })
	}
}

// TestProcessBatchTxMethods: a member's savepoint is set whichever method
// of the transaction it uses first, including those whose later statements
// bypass the wrapper (Conn, a nested transaction, large objects): a member
// that fails after writing through it has its writes rolled back, the
// others keep theirs.
func TestProcessBatchTxMethods(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	fx := newEffects(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	// A large object's row: the member creates one and records its OID.
	los := pgx.Identifier{testenv.Name(t, "lo")}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+los+" (oid oid PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid IN (SELECT oid FROM "+los+")")
		testenv.DropTables(t, los)
	})
	methods := []struct {
		name  string
		write func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error
	}{
		{"Exec", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			_, err := tx.Exec(ctx, fx.insertSQL(), k.ID)
			return err
		}},
		{"Query", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			rows, err := tx.Query(ctx, fx.insertSQL()+" RETURNING id", k.ID)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
		{"QueryRow", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			var id [16]byte
			return tx.QueryRow(ctx, fx.insertSQL()+" RETURNING id", k.ID).Scan(&id)
		}},
		{"SendBatch", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			b := &pgx.Batch{}
			b.Queue(fx.insertSQL(), k.ID)
			b.Queue("SELECT 1")
			return tx.SendBatch(ctx, b).Close()
		}},
		{"CopyFrom", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			tn := strings.Trim(fx.name, `"`)
			_, err := tx.CopyFrom(ctx, pgx.Identifier{tn}, []string{"id"}, pgx.CopyFromRows([][]any{{k.ID}}))
			return err
		}},
		{"Prepare", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			sd, err := tx.Prepare(ctx, "fx_insert", fx.insertSQL())
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, sd.Name, k.ID)
			return err
		}},
		{"Conn", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			_, err := tx.Conn().Exec(ctx, fx.insertSQL(), k.ID)
			return err
		}},
		{"Begin", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			nested, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := nested.Exec(ctx, fx.insertSQL(), k.ID); err != nil {
				return err
			}
			return nested.Commit(ctx)
		}},
		{"LargeObjects", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
			lo := tx.LargeObjects()
			oid, err := lo.Create(ctx, 0)
			if err != nil {
				return err
			}
			// The row goes through the large object's own statement, not
			// the wrapper: the large object records the key's row.
			obj, err := lo.Open(ctx, oid, pgx.LargeObjectModeWrite)
			if err != nil {
				return err
			}
			if _, err := obj.Write(k.ID[:]); err != nil {
				return err
			}
			if err := obj.Close(); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO "+los+" (oid) VALUES ($1)", oid)
			return err
		}},
	}
	var ms []member
	for _, m := range methods {
		ms = append(ms,
			member{m.name + " fails after writing", func(ctx context.Context, tx pgx.Tx, k dedupe.Key) error {
				if err := m.write(ctx, tx, k); err != nil {
					return err
				}
				return errHandler
			}, errHandler, false},
			member{m.name, m.write, nil, m.name != "LargeObjects"},
		)
	}
	runMembers(t, s, fx, ms)
	// Of the large objects, only the succeeding member's remains.
	var n int
	err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid IN (SELECT oid FROM "+los+")").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+los).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if n != 1 || rows != 1 {
		t.Fatalf("%d large objects, %d rows; want the succeeding member's only", n, rows)
	}
}

// TestProcessBatchHandlerEndsTx: a handler that commits or rolls back the
// transaction of TxFromContext (which it must not do) ends it for the whole
// group: the call returns an error, no later member's fn runs and every
// claim is released. A commit commits what the transaction held then: the
// earlier members' writes (not those of a member that failed before) and
// the committing member's own.
func TestProcessBatchHandlerEndsTx(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	fx := newEffects(t, pool)
	for _, commit := range []bool{true, false} {
		for _, writesFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("commit=%v writes first=%v", commit, writesFirst), func(t *testing.T) {
				ctx := testenv.Context(t, 20*time.Second)
				keys := []dedupe.Key{newKey(), newKey(), newKey(), newKey(), newKey()}
				var (
					called []int
					endErr error
				)
				// 0 writes; 1 writes and fails; 2 does not use the
				// transaction; 3 ends it (writing first or not); 4 writes.
				res, err := s.ProcessBatch(ctx, keys, time.Minute, 0, func(ctx context.Context, i int) error {
					called = append(called, i)
					tx, _ := pgstore.TxFromContext(ctx)
					switch i {
					case 2:
						return nil
					case 3:
						if writesFirst {
							if _, err := tx.Exec(ctx, fx.insertSQL(), keys[i].ID); err != nil {
								return err
							}
						}
						if commit {
							endErr = tx.Commit(ctx)
						} else {
							endErr = tx.Rollback(ctx)
						}
						return nil
					}
					if _, err := tx.Exec(ctx, fx.insertSQL(), keys[i].ID); err != nil {
						return err
					}
					if i == 1 {
						return errHandler
					}
					return nil
				})
				if err == nil || res != nil {
					t.Fatalf("ProcessBatch = %v, %v; want the group to fail", res, err)
				}
				if !errors.Is(err, pgx.ErrTxClosed) {
					t.Errorf("ProcessBatch: %v, want pgx.ErrTxClosed", err)
				}
				if endErr != nil {
					t.Errorf("the handler's commit or rollback: %v", endErr)
				}
				if fmt.Sprint(called) != "[0 1 2 3]" {
					t.Errorf("fn called for %v, want [0 1 2 3]", called)
				}
				want := []bool{commit, false, false, commit && writesFirst, false}
				for i, k := range keys {
					if got := fx.has(t, k); got != want[i] {
						t.Errorf("member %d: row committed %v, want %v", i, got, want[i])
					}
					mustClaim(t, s, k, time.Minute, dedupe.Acquired) // released
				}
			})
		}
	}
}

// TestProcessBatchConnectionLost: when the connection fails while a
// member's savepoint is being set, the member's statement gets the error,
// and the group fails even though the member's fn ignores it: nothing is
// committed, every claim is released, and no later member's fn runs.
func TestProcessBatchConnectionLost(t *testing.T) {
	pool := newPool(t, nil, 0)
	s := newStore(t, pool)
	fx := newEffects(t, pool)
	ctx := testenv.Context(t, 20*time.Second)
	keys := []dedupe.Key{newKey(), newKey(), newKey(), newKey()}
	var (
		pid     uint32
		called  []int
		stmtErr error
	)
	res, err := s.ProcessBatch(ctx, keys, time.Minute, 0, func(ctx context.Context, i int) error {
		called = append(called, i)
		tx, _ := pgstore.TxFromContext(ctx)
		switch i {
		case 0:
			if _, err := tx.Exec(ctx, fx.insertSQL(), keys[i].ID); err != nil {
				return err
			}
			pid = tx.Conn().PgConn().PID()
		case 1: // does not use the transaction; ends its connection
			if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				return err
			}
		case 2:
			_, stmtErr = tx.Exec(ctx, fx.insertSQL(), keys[i].ID)
		}
		return nil
	})
	if err == nil || res != nil {
		t.Fatalf("ProcessBatch = %v, %v; want the group to fail", res, err)
	}
	if errors.Is(err, dedupe.ErrRolledBack) {
		t.Errorf("ProcessBatch: %v wraps ErrRolledBack; want a store error", err)
	}
	if stmtErr == nil {
		t.Error("member 2's statement succeeded on a terminated connection")
	}
	if fmt.Sprint(called) != "[0 1 2]" {
		t.Errorf("fn called for %v, want [0 1 2]", called)
	}
	for i, k := range keys {
		if fx.has(t, k) {
			t.Errorf("member %d's row committed", i)
		}
		mustClaim(t, s, k, time.Minute, dedupe.Acquired)
	}
}
