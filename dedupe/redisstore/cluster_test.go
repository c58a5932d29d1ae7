package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// clusterClient returns a client of the shared Redis Cluster (6 nodes, 3
// primaries with a replica each), made as an application makes one: a
// redis.UniversalClient from the seed addresses, which is a ClusterClient.
func clusterClient(t *testing.T) *redis.ClusterClient {
	t.Helper()
	u := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: testenv.RedisClusterAddrs(t)})
	t.Cleanup(func() { _ = u.Close() })
	c, ok := u.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("NewUniversalClient with %d addresses made a %T, want a *redis.ClusterClient", len(testenv.RedisClusterAddrs(t)), u)
	}
	return c
}

// newSharedStore returns a store on client with a prefix of its own, whose
// keys are deleted from every primary when the test ends.
func newSharedStore(t testing.TB, client redis.UniversalClient, opts ...redisstore.Option) *redisstore.Store {
	t.Helper()
	prefix := testenv.Name(t, "dd") + ":"
	s, err := redisstore.New(client, append([]redisstore.Option{redisstore.WithPrefix(prefix), redisstore.WithDefaultRetention(time.Minute)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		del := func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
			return iter.Err()
		}
		if cc, ok := client.(*redis.ClusterClient); ok {
			_ = cc.ForEachMaster(ctx, del)
		} else if c, ok := client.(*redis.Client); ok {
			_ = del(ctx, c)
		}
	})
	return s
}

// primaryOf returns the address of the primary that holds key.
func primaryOf(t *testing.T, ctx context.Context, c *redis.ClusterClient, key string) string {
	t.Helper()
	slot, err := c.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range slots {
		if int(slot) >= r.Start && int(slot) <= r.End {
			return r.Nodes[0].Addr
		}
	}
	t.Fatalf("slot %d of %s: no node", slot, key)
	return ""
}

// TestCluster runs the conformance suite — batches and the admin operations
// included — on the shared Redis Cluster through a redis.UniversalClient,
// without and with WithReplicaAcks. Every script of the store reads and
// writes one Redis key (the record, whose braces are its hash tag), so a
// script never spans slots, and a batch, whose keys live in any slots, runs
// as one pipeline per primary.
func TestCluster(t *testing.T) {
	client := clusterClient(t)
	broken := func(t *testing.T) dedupe.Store {
		bc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{closedAddr(t)}, DialTimeout: time.Second, MaxRetries: -1})
		t.Cleanup(func() { _ = bc.Close() })
		return newSharedStore(t, bc)
	}
	t.Run("spread", func(t *testing.T) {
		for name, opts := range map[string][]redisstore.Option{
			"plain":        nil,
			"replica acks": {redisstore.WithReplicaAcks(1, time.Second)},
		} {
			t.Run(name, func(t *testing.T) {
				s := newSharedStore(t, client, opts...)
				ctx := testenv.Context(t, 20*time.Second)
				keys := make([]dedupe.Key, 32)
				for i := range keys {
					keys[i] = dedupetest.NewKey("cluster")
				}
				claims, err := s.ClaimBatch(ctx, keys, time.Minute)
				if err != nil {
					t.Fatalf("ClaimBatch across slots: %v", err)
				}
				primaries := map[string]bool{}
				for i, c := range claims {
					if !c.Acquired() {
						t.Fatalf("claim %d = %s", i, c.Status)
					}
					primaries[primaryOf(t, ctx, client, s.RedisKey(c.Key))] = true
				}
				if len(primaries) < 2 {
					t.Fatalf("32 keys landed on %d primary; the test wants a batch spread over several", len(primaries))
				}
				errs, err := s.CompleteBatch(ctx, claims, 0)
				if err != nil {
					t.Fatal(err)
				}
				for i, e := range errs {
					if e != nil {
						t.Fatalf("complete %d: %v", i, e)
					}
				}
				again, err := s.ClaimBatch(ctx, keys, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				for i, c := range again {
					if c.Status != dedupe.Duplicate {
						t.Fatalf("claim %d after completion = %s, want duplicate", i, c.Status)
					}
				}
			})
		}
	})
	t.Run("script cache flushed", func(t *testing.T) {
		// WithReplicaAcks runs its pipelines on each key's primary; one
		// whose script cache was flushed runs the scripts again with EVAL,
		// and waits for those writes.
		s := newSharedStore(t, client, redisstore.WithReplicaAcks(1, time.Second))
		ctx := testenv.Context(t, 20*time.Second)
		flush := func() {
			t.Helper()
			if err := client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() }); err != nil {
				t.Fatal(err)
			}
		}
		keys := make([]dedupe.Key, 16)
		for i := range keys {
			keys[i] = dedupetest.NewKey("flush")
		}
		flush()
		claims, err := s.ClaimBatch(ctx, keys, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		flush()
		if errs, err := s.CompleteBatch(ctx, claims, 0); err != nil || errors.Join(errs...) != nil {
			t.Fatalf("CompleteBatch after SCRIPT FLUSH = %v, %v", errs, err)
		}
		flush()
		again, err := s.ClaimBatch(ctx, keys, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range again {
			if c.Status != dedupe.Duplicate {
				t.Fatalf("claim %d after SCRIPT FLUSH = %s, want duplicate", i, c.Status)
			}
		}
		flush()
		if d, err := s.Claim(ctx, keys[0], time.Minute); err != nil || d.Status != dedupe.Duplicate {
			t.Fatalf("Claim after SCRIPT FLUSH = %s, %v; want duplicate", d.Status, err)
		}
	})
	t.Run("conformance", func(t *testing.T) {
		t.Parallel()
		dedupetest.Run(t, dedupetest.Options{
			NewStore:    func(t *testing.T) dedupe.Store { return newSharedStore(t, client) },
			Broken:      broken,
			Forever:     true,
			MinLease:    time.Millisecond,
			ErrorPrefix: "redisstore: ",
		})
	})
	t.Run("conformance with replica acks", func(t *testing.T) {
		t.Parallel()
		dedupetest.Run(t, dedupetest.Options{
			NewStore: func(t *testing.T) dedupe.Store {
				return newSharedStore(t, client, redisstore.WithReplicaAcks(1, time.Second))
			},
			Forever:     true,
			MinLease:    time.Millisecond,
			ErrorPrefix: "redisstore: ",
		})
	})
}

// TestClusterReplicaShortfall asks for more replicas than the cluster's
// primaries have (one each): every completion and every duplicate answer
// fails with ErrNotReplicated, saying how many replicas acknowledged —
// the WAIT runs on the primary that took the write, which has one.
func TestClusterReplicaShortfall(t *testing.T) {
	client := clusterClient(t)
	s := newSharedStore(t, client, redisstore.WithReplicaAcks(2, 50*time.Millisecond))
	ctx := testenv.Context(t, 20*time.Second)

	key := dedupetest.NewKey("shortfall")
	c, err := s.Claim(ctx, key, time.Minute)
	if err != nil || !c.Acquired() {
		t.Fatalf("Claim = %s, %v; an acquiring claim does not wait", c.Status, err)
	}
	err = s.Complete(ctx, c, 0)
	if !errors.Is(err, redisstore.ErrNotReplicated) || !strings.Contains(err.Error(), "1 of 2 replica(s)") {
		t.Fatalf("Complete = %v; want ErrNotReplicated with 1 of 2 replicas", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "redisstore: ") || strings.Count(msg, "redisstore:") != 1 {
		t.Errorf("error %q: want the package name once, first", msg)
	}
	// The completion is on the primary: retrying it with the same claim
	// is not a second success.
	if err := s.Complete(ctx, c, 0); !errors.Is(err, dedupe.ErrLeaseLost) || !strings.Contains(err.Error(), "completed before with this token") {
		t.Fatalf("second Complete = %v; want ErrLeaseLost, completed before", err)
	}
	// A claim finds it done, but does not answer duplicate unreplicated.
	if d, err := s.Claim(ctx, key, time.Minute); !errors.Is(err, redisstore.ErrNotReplicated) || d.Status != 0 {
		t.Fatalf("Claim of the completed key = %s, %v; want ErrNotReplicated", d.Status, err)
	}

	// Batches: several primaries, each with one replica.
	keys := make([]dedupe.Key, 16)
	for i := range keys {
		keys[i] = dedupetest.NewKey("shortfall")
	}
	claims, err := s.ClaimBatch(ctx, keys, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if errs, err := s.CompleteBatch(ctx, claims, 0); !errors.Is(err, redisstore.ErrNotReplicated) || errs != nil {
		t.Fatalf("CompleteBatch = %v, %v; want ErrNotReplicated for the whole call", errs, err)
	}
	if got, err := s.ClaimBatch(ctx, keys, time.Minute); !errors.Is(err, redisstore.ErrNotReplicated) || got != nil {
		t.Fatalf("ClaimBatch of completed keys = %v, %v; want ErrNotReplicated", got, err)
	}
	// The store without the option sees them done.
	if d, err := plainView(t, client, s).Claim(ctx, keys[0], time.Minute); err != nil || d.Status != dedupe.Duplicate {
		t.Fatalf("plain Claim = %s, %v; want duplicate", d.Status, err)
	}
}

// plainView returns a store without options on s's prefix (read from one of
// its Redis keys).
func plainView(t testing.TB, client redis.UniversalClient, s *redisstore.Store) *redisstore.Store {
	t.Helper()
	rk := s.RedisKey(dedupe.Key{Scope: "x", ID: dedupetest.NewKey("x").ID})
	prefix := rk[:strings.IndexByte(rk, '{')]
	v, err := redisstore.New(client, redisstore.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// failoverClient returns a Sentinel failover client of the shared setup, as
// an application makes one.
func failoverClient(t testing.TB, s *testenv.Sentinel) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.Master,
		SentinelAddrs: s.Addrs,
		DialTimeout:   time.Second,
		ReadTimeout:   2 * time.Second,
		WriteTimeout:  2 * time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSentinel runs the conformance suite through a Sentinel failover client
// (a primary with one replica) with WithReplicaAcks, which waits on the
// client's connection to the primary. (Without the option the store runs
// its scripts through the client as on a standalone server:
// TestSentinelFailover uses it so.)
func TestSentinel(t *testing.T) {
	s := testenv.RedisSentinel(t)
	client := failoverClient(t, s)
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store {
			return newSharedStore(t, client, redisstore.WithReplicaAcks(1, time.Second))
		},
		Forever:     true,
		MinLease:    time.Millisecond,
		ErrorPrefix: "redisstore: ",
	})
}

// TestReplicaAcksOptions checks WithReplicaAcks's validation: its values,
// the client types it needs and its timeout against the client's.
func TestReplicaAcksOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	bad := map[string]struct {
		client redis.UniversalClient
		o      redisstore.Option
	}{
		"no replica":         {c, redisstore.WithReplicaAcks(0, time.Second)},
		"negative":           {c, redisstore.WithReplicaAcks(-1, time.Second)},
		"no timeout":         {c, redisstore.WithReplicaAcks(1, 0)},
		"sub-millisecond":    {c, redisstore.WithReplicaAcks(1, time.Microsecond)},
		"above ReadTimeout":  {c, redisstore.WithReplicaAcks(1, 5*time.Second)}, // the default ReadTimeout (go-redis v9.23)
		"ring":               {redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": closedAddr(t)}}), redisstore.WithReplicaAcks(1, time.Second)},
		"cluster, too long":  {redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{closedAddr(t)}, ReadTimeout: time.Second}), redisstore.WithReplicaAcks(1, time.Second)},
		"client, short read": {redis.NewClient(&redis.Options{Addr: closedAddr(t), ReadTimeout: 100 * time.Millisecond}), redisstore.WithReplicaAcks(1, 200*time.Millisecond)},
	}
	for name, b := range bad {
		_, err := redisstore.New(b.client, b.o)
		if err == nil {
			t.Errorf("%s: New accepted it", name)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "redisstore: WithReplicaAcks(") || strings.Count(msg, "redisstore:") != 1 {
			t.Errorf("%s: error %q does not start with %q", name, msg, "redisstore: WithReplicaAcks(")
		}
	}
	good := []redis.UniversalClient{
		c,
		redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{closedAddr(t)}}),
		redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{closedAddr(t)}}),
		redis.NewClient(&redis.Options{Addr: closedAddr(t), ReadTimeout: -1}), // no read timeout
	}
	for _, g := range good {
		if _, err := redisstore.New(g, redisstore.WithReplicaAcks(1, 2*time.Second)); err != nil {
			t.Errorf("%T: %v", g, err)
		}
		_ = g.Close()
	}
	for _, b := range bad {
		if b.client != c {
			_ = b.client.Close()
		}
	}
}
