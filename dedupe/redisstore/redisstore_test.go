package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// newClient connects to the test Redis and counts, per connection write, the
// requests sent (see counter).
func newClient(t testing.TB, cnt *counter) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if cnt != nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: &cnt.writes}, nil
		}
	}
	opt.PoolSize = 32
	c := redis.NewClient(opt)
	if cnt != nil {
		c.AddHook(cnt)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newStore returns a store on a prefix of its own, whose keys are deleted when
// the test ends.
func newStore(t testing.TB, c *redis.Client, opts ...redisstore.Option) *redisstore.Store {
	t.Helper()
	prefix := testenv.Name(t, "dd") + ":"
	opts = append([]redisstore.Option{redisstore.WithPrefix(prefix), redisstore.WithDefaultRetention(time.Minute)}, opts...)
	s, err := redisstore.New(c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return s
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
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

func TestConformance(t *testing.T) {
	c := newClient(t, nil)
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store { return newStore(t, c) },
		Broken: func(t *testing.T) dedupe.Store {
			// A client whose server is gone.
			bc := redis.NewClient(&redis.Options{Addr: closedAddr(t), DialTimeout: time.Second, MaxRetries: -1})
			t.Cleanup(func() { _ = bc.Close() })
			return newStore(t, bc)
		},
		Forever:     true,
		MinLease:    time.Millisecond,
		ErrorPrefix: "redisstore: ",
	})
}

// TestBroken checks the errors of a store that cannot reach its server: a
// closed client, a server address nothing listens on, a closed store.
func TestBroken(t *testing.T) {
	key := dedupe.Key{Scope: "broken", ID: uuid.New()}
	forged := dedupe.Claim{Key: key, Status: dedupe.Acquired, Token: 1}
	cases := []struct {
		name  string
		store func(t *testing.T) *redisstore.Store
		want  error
	}{
		{"closed client", func(t *testing.T) *redisstore.Store {
			c := newClient(t, nil)
			s := newStore(t, c)
			_ = c.Close()
			return s
		}, redis.ErrClosed},
		{"unreachable server", func(t *testing.T) *redisstore.Store {
			c := redis.NewClient(&redis.Options{Addr: closedAddr(t), DialTimeout: time.Second, MaxRetries: -1})
			t.Cleanup(func() { _ = c.Close() })
			return newStore(t, c)
		}, nil},
		{"closed store", func(t *testing.T) *redisstore.Store {
			s := newStore(t, newClient(t, nil))
			_ = s.Close()
			return s
		}, dedupe.ErrClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store(t)
			ctx := testenv.Context(t, 10*time.Second)
			c, err := s.Claim(ctx, key, time.Minute)
			if err == nil || c.Status != 0 {
				t.Fatalf("Claim = %s, %v; want an error and no status", c.Status, err)
			}
			errs := []error{err, s.Complete(ctx, forged, 0), s.Release(ctx, forged)}
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
	c := newClient(t, nil)
	bad := []struct {
		option string
		o      redisstore.Option
	}{
		{"WithPrefix", redisstore.WithPrefix("a{b")},
		{"WithDefaultLease", redisstore.WithDefaultLease(0)},
		{"WithDefaultLease", redisstore.WithDefaultLease(time.Microsecond)},
		{"WithDefaultRetention", redisstore.WithDefaultRetention(-2 * time.Second)},
	}
	for _, b := range bad {
		_, err := redisstore.New(c, b.o)
		if err == nil {
			t.Errorf("%s: New accepted an invalid value", b.option)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "redisstore: "+b.option+"(") || strings.Count(msg, "redisstore:") != 1 {
			t.Errorf("%s: error %q does not start with %q", b.option, msg, "redisstore: "+b.option+"(")
		}
	}
	if _, err := redisstore.New(nil); err == nil {
		t.Error("New(nil client) accepted it")
	}
	s, err := redisstore.New(c)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	if got, want := s.RedisKey(dedupe.Key{Scope: "billing", ID: id}), "uuidforge:dedupe:{billing/6ba7b810-9dad-11d1-80b4-00c04fd430c8}"; got != want {
		t.Errorf("RedisKey = %q, want %q", got, want)
	}
}

// TestRecord checks what the store leaves in Redis: the hash's expiry after
// a claim, a completion and a completion kept forever.
func TestRecord(t *testing.T) {
	c := newClient(t, nil)
	s := newStore(t, c, redisstore.WithDefaultLease(5*time.Second))
	ctx := testenv.Context(t, 10*time.Second)
	key := dedupe.Key{Scope: "record", ID: uuid.New()}
	rk := s.RedisKey(key)
	cl, err := s.Claim(ctx, key, 0)
	if err != nil || !cl.Acquired() {
		t.Fatalf("Claim = %s, %v", cl.Status, err)
	}
	if ttl := c.PTTL(ctx, rk).Val(); ttl <= 5*time.Second || ttl > 5*time.Second+redisstore.RecordGrace {
		t.Fatalf("TTL after claim = %v, want the lease plus %v", ttl, redisstore.RecordGrace)
	}
	if err := s.Complete(ctx, cl, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, rk).Val(); ttl <= time.Hour || ttl > 2*time.Hour {
		t.Fatalf("TTL after complete = %v, want about the retention", ttl)
	}

	key2 := dedupe.Key{Scope: "record", ID: uuid.New()}
	cl2, err := s.Claim(ctx, key2, 0)
	if err != nil || !cl2.Acquired() {
		t.Fatalf("Claim = %s, %v", cl2.Status, err)
	}
	if err := s.Complete(ctx, cl2, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, s.RedisKey(key2)).Val(); ttl != -1 {
		t.Fatalf("PTTL after Complete(Forever) = %v, want -1 (no expiry)", ttl)
	}
}

// TestLateComplete: a holder that overran its lease still completes while
// nobody else claimed the key, within RecordGrace.
func TestLateComplete(t *testing.T) {
	s := newStore(t, newClient(t, nil))
	ctx := testenv.Context(t, 10*time.Second)
	key := dedupe.Key{Scope: "late", ID: uuid.New()}
	cl, err := s.Claim(ctx, key, 50*time.Millisecond)
	if err != nil || !cl.Acquired() {
		t.Fatalf("Claim = %s, %v", cl.Status, err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := s.Complete(ctx, cl, 0); err != nil {
		t.Fatalf("late Complete with nobody else holding the key: %v", err)
	}
	if d, err := s.Claim(ctx, key, 0); err != nil || d.Status != dedupe.Duplicate {
		t.Fatalf("Claim after late Complete = %s, %v; want duplicate", d.Status, err)
	}
}

// TestWrapping checks that errors.Is sees the sentinels through the store's
// wrapping and one more layer of the caller's.
func TestWrapping(t *testing.T) {
	s := newStore(t, newClient(t, nil))
	ctx := testenv.Context(t, 10*time.Second)
	err := s.Complete(ctx, dedupe.Claim{Key: dedupe.Key{Scope: "w", ID: uuid.New()}, Status: dedupe.Acquired, Token: 7}, 0)
	wrapped := fmt.Errorf("handler: %w", err)
	if !errors.Is(wrapped, dedupe.ErrLeaseLost) {
		t.Fatalf("%v does not wrap ErrLeaseLost", wrapped)
	}
	_, err = s.Claim(ctx, dedupe.Key{Scope: "", ID: uuid.New()}, 0)
	if !errors.Is(fmt.Errorf("handler: %w", err), dedupe.ErrInvalidKey) {
		t.Fatalf("%v does not wrap ErrInvalidKey", err)
	}
}

// TestRoundTrips checks that every call is one round trip once the scripts
// are cached, and one more (EVAL after NOSCRIPT) after a script cache flush.
func TestRoundTrips(t *testing.T) {
	cnt := &counter{}
	c := newClient(t, cnt)
	s := newStore(t, c)
	ctx := testenv.Context(t, 10*time.Second)
	measure := func(what string, want int64, f func() error) {
		t.Helper()
		w0, c0 := cnt.writes.Load(), cnt.cmds.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if w, n := cnt.writes.Load()-w0, cnt.cmds.Load()-c0; w != want || n != want {
			t.Errorf("%s: %d writes, %d commands; want %d round trips", what, w, n, want)
		}
	}
	// Warm up: load the scripts and open a connection.
	warm := dedupe.Key{Scope: "rt", ID: uuid.New()}
	cl, err := s.Claim(ctx, warm, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, cl); err != nil {
		t.Fatal(err)
	}
	if cl, err = s.Claim(ctx, warm, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, cl, 0); err != nil {
		t.Fatal(err)
	}

	key := dedupe.Key{Scope: "rt", ID: uuid.New()}
	measure("claim", 1, func() error { cl, err = s.Claim(ctx, key, 0); return err })
	measure("claim in flight", 1, func() error { _, err := s.Claim(ctx, key, 0); return err })
	measure("release", 1, func() error { return s.Release(ctx, cl) })
	measure("claim again", 1, func() error { cl, err = s.Claim(ctx, key, 0); return err })
	measure("complete", 1, func() error { return s.Complete(ctx, cl, 0) })
	measure("claim duplicate", 1, func() error { _, err := s.Claim(ctx, key, 0); return err })

	// After a script cache flush: EVALSHA fails with NOSCRIPT, EVAL follows.
	afterScriptFlush(t, ctx, c, func() bool {
		w0, c0 := cnt.writes.Load(), cnt.cmds.Load()
		cl, err = s.Claim(ctx, dedupe.Key{Scope: "rt", ID: uuid.New()}, 0)
		if err != nil || !cl.Acquired() {
			t.Fatalf("claim after SCRIPT FLUSH = %s, %v", cl.Status, err)
		}
		switch w, n := cnt.writes.Load()-w0, cnt.cmds.Load()-c0; {
		case w == 2 && n == 2:
			return true
		case w == 1 && n == 1:
			return false // the script was loaded again meanwhile
		default:
			t.Fatalf("claim after SCRIPT FLUSH: %d writes, %d commands; want 2 round trips", w, n)
			return false
		}
	})
}

// afterScriptFlush runs try after a SCRIPT FLUSH until try reports that it
// saw the flush (NOSCRIPT, then EVAL), five times at most. The flush
// empties the whole server's script cache, and other test packages using
// this Redis may load the same scripts again at any moment: try returns
// false when that happened between the flush and its call.
func afterScriptFlush(t *testing.T, ctx context.Context, c *redis.Client, try func() bool) {
	t.Helper()
	for range 5 {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if try() {
			return
		}
	}
	t.Fatal("5 attempts, and in each another client loaded a script again between SCRIPT FLUSH and its use")
}

// counter counts connection writes (each is one request flushed to the
// server: one round trip) and commands seen by the client's hook, per
// context when the context carries a *atomic.Int64 (see withCount).
type counter struct {
	writes atomic.Int64
	cmds   atomic.Int64
}

type countKey struct{}

func withCount(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, countKey{}, n)
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.cmds.Add(1)
		if n, ok := ctx.Value(countKey{}).(*atomic.Int64); ok {
			n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.cmds.Add(int64(len(cmds)))
		if n, ok := ctx.Value(countKey{}).(*atomic.Int64); ok {
			n.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// TestConcurrentReclaim: many claims at once of a key whose record exists
// and is claimable (released, lease ended, retention ended) — exactly one
// acquires, the others are in flight, none is told duplicate.
func TestConcurrentReclaim(t *testing.T) {
	s := newStore(t, newClient(t, nil))
	ctx := testenv.Context(t, 30*time.Second)
	claim := func(k dedupe.Key, lease time.Duration) dedupe.Claim {
		t.Helper()
		c, err := s.Claim(ctx, k, lease)
		if err != nil || !c.Acquired() {
			t.Fatalf("Claim = %s, %v; want acquired", c.Status, err)
		}
		return c
	}
	prepare := map[string]func(k dedupe.Key){
		"released": func(k dedupe.Key) {
			if err := s.Release(ctx, claim(k, time.Minute)); err != nil {
				t.Fatal(err)
			}
		},
		"lease ended": func(k dedupe.Key) {
			claim(k, time.Millisecond)
			time.Sleep(5 * time.Millisecond)
		},
		"retention ended": func(k dedupe.Key) {
			if err := s.Complete(ctx, claim(k, time.Minute), time.Millisecond); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		},
	}
	for name, prep := range prepare {
		t.Run(name, func(t *testing.T) {
			key := dedupe.Key{Scope: "reclaim", ID: uuid.New()}
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
		})
	}
}

// TestBatchRoundTrips: a batch is one round trip (one pipeline of the
// per-key scripts) whatever its size, and one more after a script cache
// flush.
func TestBatchRoundTrips(t *testing.T) {
	cnt := &counter{}
	c := newClient(t, cnt)
	s := newStore(t, c)
	ctx := testenv.Context(t, 10*time.Second)
	keys := func(n int) []dedupe.Key {
		ks := make([]dedupe.Key, n)
		for i := range ks {
			ks[i] = dedupe.Key{Scope: "rt", ID: uuid.New()}
		}
		return ks
	}
	// Warm up: load the scripts and open a connection.
	warm, err := s.ClaimBatch(ctx, keys(2), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CompleteBatch(ctx, warm, 0); err != nil {
		t.Fatal(err)
	}
	measure := func(what string, wantWrites, wantCmds int64, f func() error) {
		t.Helper()
		w0, c0 := cnt.writes.Load(), cnt.cmds.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if w, n := cnt.writes.Load()-w0, cnt.cmds.Load()-c0; w != wantWrites || n != wantCmds {
			t.Errorf("%s: %d writes, %d commands; want %d and %d", what, w, n, wantWrites, wantCmds)
		}
	}
	var claims []dedupe.Claim
	measure("claim 64", 1, 64, func() error { claims, err = s.ClaimBatch(ctx, keys(64), 0); return err })
	measure("complete 64", 1, 64, func() error {
		errs, err := s.CompleteBatch(ctx, claims, 0)
		return errors.Join(append(errs, err)...)
	})
	// After SCRIPT FLUSH, a claim and a release of 16 each take one more
	// round trip (NOSCRIPT, then the scripts themselves); with a script
	// loaded again by another client meanwhile, one (1 write, 16 commands).
	counts := func(f func() error) (writes, cmds int64) {
		w0, c0 := cnt.writes.Load(), cnt.cmds.Load()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return cnt.writes.Load() - w0, cnt.cmds.Load() - c0
	}
	afterScriptFlush(t, ctx, c, func() bool {
		cw, cc := counts(func() error { claims, err = s.ClaimBatch(ctx, keys(16), 0); return err })
		for i, cl := range claims {
			if !cl.Acquired() {
				t.Fatalf("claim %d after SCRIPT FLUSH = %s", i, cl.Status)
			}
		}
		rw, rc := counts(func() error {
			errs, err := s.ReleaseBatch(ctx, claims)
			return errors.Join(append(errs, err)...)
		})
		flushed := func(w, n int64) bool { return w == 2 && n == 32 }
		reloaded := func(w, n int64) bool { return w == 1 && n == 16 }
		if !(flushed(cw, cc) || reloaded(cw, cc)) || !(flushed(rw, rc) || reloaded(rw, rc)) {
			t.Fatalf("after SCRIPT FLUSH: claim 16: %d writes, %d commands; release 16: %d writes, %d commands; want 2 and 32 each", cw, cc, rw, rc)
		}
		return flushed(cw, cc) && flushed(rw, rc)
	})
}
