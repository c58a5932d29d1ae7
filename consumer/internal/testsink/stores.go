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
	// Name names the store in subtest names.
	Name string
	// New builds the store for t, cleaned up when t ends.
	New func(t testing.TB) dedupe.Store
}

// Memory returns a memory store closed when t ends.
func Memory(t testing.TB) dedupe.Store {
	s, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Redis returns a Redis store with a key prefix unique to t; its keys are
// deleted when t ends.
func Redis(t testing.TB) dedupe.Store {
	t.Helper()
	return redisVia(t, "")
}

// RedisBehindProxy returns a Redis store whose connections go through a TCP
// proxy, for outage tests: proxy.SetDown(true) makes the real server
// unreachable for the store until SetDown(false).
func RedisBehindProxy(t testing.TB) (dedupe.Store, *testenv.Proxy) {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartProxy(t, opts.Addr)
	return redisVia(t, proxy.Addr()), proxy
}

func redisVia(t testing.TB, addr string) dedupe.Store {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	direct := redis.NewClient(opts)
	if addr != "" {
		o := *opts
		o.Addr = addr
		opts = &o
	}
	client := redis.NewClient(opts)
	prefix := testenv.Name(t, "dd") + ":"
	t.Cleanup(func() {
		_ = client.Close()
		ctx := context.Background()
		iter := direct.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			direct.Del(ctx, iter.Val())
		}
		_ = direct.Close()
	})
	s, err := redisstore.New(client, redisstore.WithPrefix(prefix))
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
	s, err := pgstore.New(pool, pgstore.WithTable(table), pgstore.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	})
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// Stores returns the store cases every integration test runs on.
func Stores() []StoreCase {
	return []StoreCase{{"memory", Memory}, {"redis", Redis}, {"postgres", Postgres}}
}
