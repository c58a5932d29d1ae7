package testsink

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// StoreCase names a way to build a real store for one test.
type StoreCase struct {
	Name string
	New  func(t testing.TB) dedupe.Store
}

// Memory returns a memory store closed when t ends.
func Memory(t testing.TB) dedupe.Store {
	s := dedupe.NewMemory()
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Redis returns a Redis store with a key prefix unique to t.
func Redis(t testing.TB) dedupe.Store {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	s, err := redisstore.New(client, redisstore.WithPrefix(testenv.Name(t, "dd")+":"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Postgres returns a PostgreSQL store (a transactional inbox) on its own
// table, dropped when t ends, keeping completions forever.
func Postgres(t testing.TB) dedupe.Store {
	t.Helper()
	pool := Pool(t)
	table := testenv.Name(t, "dd")
	s, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table), pgstore.WithMigrate(),
		pgstore.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	})
	return s
}

// Stores returns the store cases every integration test runs on.
func Stores() []StoreCase {
	return []StoreCase{{"memory", Memory}, {"redis", Redis}, {"postgres", Postgres}}
}
