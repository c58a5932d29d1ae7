package wmtest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
)

// Store is a dedupe store under test.
type Store struct {
	Name  string       // the kind, for subtest names: "memory", "redis", "postgres", "bbolt"
	Store dedupe.Store // fresh for the test
}

// Stores returns one store of each kind, each fresh for the test: memory,
// Redis, PostgreSQL (an Inbox) and bbolt.
func Stores(t *testing.T) []Store {
	t.Helper()
	mem, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	_, pg := Postgres(t)
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "dedupe.db"), boltstore.WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bolt.Close() })
	return []Store{{"memory", mem}, {"redis", Redis(t)}, {"postgres", pg}, {"bbolt", bolt}}
}

// Redis returns a Redis store whose keys are unique to the test.
func Redis(t testing.TB) *redisstore.Store {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		Unavailable(t, "Redis", err)
	}
	s, err := redisstore.New(c, redisstore.WithPrefix(Name(t, "wm")+":"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Postgres returns a pool and a PostgreSQL store in a table of the test's
// own, dropped when the test ends.
func Postgres(t testing.TB) (*pgxpool.Pool, *pgstore.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, PostgresURL(t))
	if err != nil {
		Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		Unavailable(t, "PostgreSQL", err)
	}
	table := Name(t, "wm_dedupe")
	s, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+s.Table()+" CASCADE")
		_ = s.Close()
	})
	return pool, s
}
