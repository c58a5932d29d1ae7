package pgstore_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// newPool connects to the test database. With cnt, it counts statements
// (per context too, see withCount) and connection writes (round trips).
func newPool(t testing.TB, cnt *counter, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if cnt != nil {
		cfg.ConnConfig.Tracer = cnt
		d := &net.Dialer{Timeout: 5 * time.Second}
		cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: &cnt.writes}, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a store on a migrated table of its own, dropped (with
// its sequence) when the test ends.
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	table := testenv.Name(t, "dd")
	// Migrate before the store under test exists, so that a janitor it
	// starts finds the table.
	m, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, m.Table()) })
	if err := m.Migrate(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(pool, append([]pgstore.Option{pgstore.WithTable(table)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// unreachablePool is a pool whose server address nothing listens on.
func unreachablePool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@" + closedAddr(t) + "/test?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestConformance(t *testing.T) {
	pool := newPool(t, nil, 0)
	// The handlers' own table, shared by the inbox cases (their keys are
	// random, so they never collide).
	effects := pgx.Identifier{testenv.Name(t, "fx")}.Sanitize()
	// orphans' rows refer to a parent that never exists, through a foreign
	// key checked at COMMIT.
	parents, orphans := pgx.Identifier{testenv.Name(t, "parent")}.Sanitize(), pgx.Identifier{testenv.Name(t, "orphan")}.Sanitize()
	if _, err := pool.Exec(testenv.Context(t, 10*time.Second), "CREATE TABLE "+effects+" (id uuid PRIMARY KEY);"+
		"CREATE TABLE "+parents+" (id int PRIMARY KEY);"+
		"CREATE TABLE "+orphans+" (id uuid PRIMARY KEY, parent int NOT NULL REFERENCES "+parents+" (id) DEFERRABLE INITIALLY DEFERRED)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, orphans, parents, effects) })
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store { return newStore(t, pool) },
		Broken: func(t *testing.T) dedupe.Store {
			s, err := pgstore.New(unreachablePool(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Forever:     true,
		MinLease:    time.Millisecond,
		ErrorPrefix: "pgstore: ",
		InboxWrite: func(ctx context.Context, t *testing.T, key dedupe.Key) error {
			tx, ok := pgstore.TxFromContext(ctx)
			if !ok {
				t.Fatal("no transaction in Process's context")
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (id) VALUES ($1)", key.ID)
			return err
		},
		InboxFailCommit: func(ctx context.Context, t *testing.T, key dedupe.Key) error {
			tx, _ := pgstore.TxFromContext(ctx)
			_, err := tx.Exec(ctx, "INSERT INTO "+orphans+" (id, parent) VALUES ($1, 42)", key.ID)
			return err
		},
		InboxHasRow: func(t *testing.T, key dedupe.Key) bool {
			var ok bool
			err := pool.QueryRow(testenv.Context(t, 10*time.Second), "SELECT EXISTS (SELECT 1 FROM "+effects+" WHERE id = $1)", key.ID).Scan(&ok)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		},
	})
}
