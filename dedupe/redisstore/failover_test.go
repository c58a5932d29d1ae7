//go:build unix

package redisstore_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// load claims and completes fresh keys in a loop, with several workers, and
// records the keys whose Complete returned nil.
type load struct {
	store *redisstore.Store

	mu          sync.Mutex
	done        []dedupe.Key
	doneAt      []time.Time
	errs        int
	unconfirmed int // Complete failed with ErrNotReplicated
	samples     map[string]int
}

func (l *load) run(ctx context.Context, workers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				key := dedupetest.NewKey("failover")
				c, err := l.store.Claim(ctx, key, 10*time.Second)
				if err == nil && c.Acquired() {
					err = l.store.Complete(ctx, c, 0)
				}
				l.mu.Lock()
				switch {
				case err == nil:
					l.done = append(l.done, key)
					l.doneAt = append(l.doneAt, time.Now())
				case errors.Is(err, redisstore.ErrNotReplicated):
					l.unconfirmed++
				case ctx.Err() == nil:
					l.errs++
					if l.samples == nil {
						l.samples = map[string]int{}
					}
					msg := err.Error()
					if i := strings.LastIndex(msg, ": "); i >= 0 {
						msg = msg[i+2:]
					}
					l.samples[msg]++
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	return &wg
}

// doneSince returns how many keys were completed after t0.
func (l *load) doneSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i := len(l.doneAt) - 1; i >= 0 && l.doneAt[i].After(t0); i-- {
		n++
	}
	return n
}

// lost claims every key of keys through view (a store without
// WithReplicaAcks on the same prefix) and returns those that are not
// duplicates: completions the promoted primary does not have. Such a key is
// acquired, or in flight when the primary had its claim but not its
// completion (it is claimable once that lease ends).
func lost(t *testing.T, ctx context.Context, view *redisstore.Store, keys []dedupe.Key) []dedupe.Key {
	t.Helper()
	var out []dedupe.Key
	for i := 0; i < len(keys); i += 100 {
		batch := keys[i:min(i+100, len(keys))]
		var claims []dedupe.Claim
		var err error
		for range 50 { // the client may still be finding the new primary
			if claims, err = view.ClaimBatch(ctx, batch, time.Minute); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("claim after the failover: %v", err)
		}
		for _, c := range claims {
			if c.Status != dedupe.Duplicate {
				out = append(out, c.Key)
			}
		}
	}
	return out
}

// TestSentinelFailover kills the primary of the Sentinel setup twice and
// counts the completions the promoted replica does not have, for a store
// without WithReplicaAcks ("plain") and one with WithReplicaAcks(1, …)
// ("acked"), both through a failover client. The two phases run in this
// order in one test: the second freezes the replica, which it may do only
// once the first failover made the test the setup's only user.
//
//  1. Under a steady completion load (8 workers per store), the primary is
//     killed (SIGKILL) and the replica promoted. The plain store loses the
//     completions that had not reached the replica yet — on loopback, where
//     replication takes microseconds, usually none; the count is logged. The
//     acked store loses none of the completions it reported. Both reconnect
//     to the new primary; the acked store completes nothing while the new
//     primary has no replica (ErrNotReplicated) and completes again once the
//     old primary is back as its replica.
//  2. The replica is frozen (SIGSTOP): the acked store reports none of
//     the completions it makes then (ErrNotReplicated: not acked), nor a
//     duplicate. Then the replica's link is cut, so that nothing written
//     from then on can reach it, and the plain store completes keys; the
//     primary is killed and the replica resumed and promoted. Every
//     completion the plain store reported then is lost (those messages
//     would be processed again), and the keys the acked store completed
//     before the freeze are still duplicates.
func TestSentinelFailover(t *testing.T) {
	s := testenv.RedisSentinel(t)
	client := failoverClient(t, s)
	ctx := testenv.Context(t, 4*time.Minute)
	steadyLoad(t, ctx, s, client)
	frozenReplica(t, ctx, s, client)
}

// steadyLoad is the first phase of TestSentinelFailover.
func steadyLoad(t *testing.T, ctx context.Context, s *testenv.Sentinel, client *redis.Client) {
	plain := &load{store: newSharedStore(t, client)}
	acked := &load{store: newSharedStore(t, client, redisstore.WithReplicaAcks(1, 500*time.Millisecond))}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	start := time.Now()
	wgs := []*sync.WaitGroup{plain.run(lctx, 8), acked.run(lctx, 8)}
	waitUntil(t, ctx, "load before the failover", func() bool { return plain.doneSince(start) >= 500 && acked.doneSince(start) >= 500 })

	killed := time.Now()
	old, primary := s.KillPrimary(t)
	promoted := time.Now()
	waitUntil(t, ctx, "the plain store completing on the new primary", func() bool { return plain.doneSince(promoted) >= 100 })
	// The new primary has no replica until the old one is back.
	unconfirmedAlone := func() int { acked.mu.Lock(); defer acked.mu.Unlock(); return acked.unconfirmed }
	waitUntil(t, ctx, "ErrNotReplicated from the acked store", func() bool { return unconfirmedAlone() > 0 })
	alone := unconfirmedAlone()
	restoring := time.Now()
	s.Restore(t) // the old primary comes back as a replica
	waitUntil(t, ctx, "the acked store completing with the replica back", func() bool { return acked.doneSince(restoring) >= 100 })
	stop()
	for _, wg := range wgs {
		wg.Wait()
	}
	elapsed := time.Since(start)

	plainLost := lost(t, ctx, plainView(t, client, plain.store), plain.done)
	ackedLost := lost(t, ctx, plainView(t, client, acked.store), acked.done)
	t.Logf("primary %s killed, %s promoted after %v; %v of load", old, primary, promoted.Sub(killed).Round(10*time.Millisecond), elapsed.Round(100*time.Millisecond))
	t.Logf("plain: %d completions reported (%.0f/s), %d lost in the failover, %d failed calls",
		len(plain.done), float64(len(plain.done))/elapsed.Seconds(), len(plainLost), plain.errs)
	t.Logf("acked: %d completions reported (%.0f/s), %d lost, %d not replicated (%d before the replica was back), %d failed calls",
		len(acked.done), float64(len(acked.done))/elapsed.Seconds(), len(ackedLost), acked.unconfirmed, alone, acked.errs)
	t.Logf("plain errors: %v; acked errors: %v", plain.samples, acked.samples)
	if len(ackedLost) != 0 {
		t.Errorf("with WithReplicaAcks, %d completions the store reported are lost after the failover: %v", len(ackedLost), ackedLost)
	}
}

// frozenReplica is the second phase of TestSentinelFailover; the test is
// the setup's only user already.
func frozenReplica(t *testing.T, ctx context.Context, s *testenv.Sentinel, client *redis.Client) {
	plain := newSharedStore(t, client)
	acked := newSharedStore(t, client, redisstore.WithReplicaAcks(1, 50*time.Millisecond))
	complete := func(st *redisstore.Store, key dedupe.Key) error {
		c, err := st.Claim(ctx, key, time.Minute)
		if err != nil {
			return err
		}
		if !c.Acquired() {
			t.Fatalf("claim of a new key %s: %s", key, c.Status)
		}
		return st.Complete(ctx, c, 0)
	}
	keys := func(n int) []dedupe.Key {
		ks := make([]dedupe.Key, n)
		for i := range ks {
			ks[i] = dedupetest.NewKey("frozen")
		}
		return ks
	}
	// Completed and replicated before the freeze.
	before := keys(20)
	for _, k := range before {
		if err := complete(acked, k); err != nil {
			t.Fatalf("complete before the freeze: %v", err)
		}
	}

	primary, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc := redis.NewClient(&redis.Options{Addr: primary})
	defer pc.Close()
	replica := replicaOf(t, ctx, pc)
	pid := serverPID(t, ctx, replica)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		testenv.Unavailable(t, "SIGSTOP of the local replica", err)
	}
	var resumed sync.Once
	resume := func() { resumed.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)

	// The replica is connected but frozen: it acknowledges nothing. (A
	// WAIT on a connection that wrote nothing would still count it.)
	plainKeys, ackedKeys := keys(50), keys(50)
	var wg sync.WaitGroup
	var unconfirmed atomic.Int64
	for w := range 10 {
		wg.Go(func() {
			for _, k := range ackedKeys[w*5 : w*5+5] {
				err := complete(acked, k)
				if !errors.Is(err, redisstore.ErrNotReplicated) {
					t.Errorf("acked complete with the replica frozen = %v; want ErrNotReplicated", err)
					continue
				}
				unconfirmed.Add(1)
			}
		})
	}
	wg.Wait()
	if d, err := acked.Claim(ctx, before[0], time.Minute); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Errorf("acked claim of a completed key with the replica frozen = %s, %v; want ErrNotReplicated", d.Status, err)
	}

	// Cut the link: what the primary writes from now on reaches no
	// replica (the frozen one cannot reconnect), so the plain store's
	// completions exist on the primary alone.
	if err := pc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	if info := pc.Info(ctx, "replication").Val(); !strings.Contains(info, "connected_slaves:0") {
		t.Fatalf("the replica is still connected:\n%s", info)
	}
	for _, k := range plainKeys {
		if err := complete(plain, k); err != nil {
			t.Fatalf("plain complete with the replica cut off: %v", err)
		}
	}

	// Resume the replica as soon as the primary is dead, so that the
	// Sentinels can promote it.
	go func() {
		for ctx.Err() == nil {
			c, err := net.DialTimeout("tcp", primary, 100*time.Millisecond)
			if err != nil {
				resume()
				return
			}
			c.Close()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	start := time.Now()
	old, promoted := s.KillPrimary(t)
	resume()
	t.Logf("primary %s killed with its replica frozen, %s promoted after %v", old, promoted, time.Since(start).Round(10*time.Millisecond))

	plainLost := lost(t, ctx, plainView(t, client, plain), plainKeys)
	ackedAgain := lost(t, ctx, plainView(t, client, acked), ackedKeys)
	beforeLost := lost(t, ctx, plainView(t, client, acked), before)
	// The acked store's unconfirmed completions were sent to the frozen
	// replica before the link was cut, so it may apply them when it
	// resumes: each is then a duplicate, or else processed again. Neither
	// loses a message; none of them was reported done.
	t.Logf("plain: %d of %d reported completions lost; acked: 0 of %d reported (%d ErrNotReplicated), %d of them processed again; %d of %d replicated earlier lost",
		len(plainLost), len(plainKeys), len(ackedKeys), unconfirmed.Load(), len(ackedAgain), len(beforeLost), len(before))
	if len(plainLost) != len(plainKeys) {
		t.Errorf("plain: %d of %d unreplicated completions lost; the replica cannot have had them", len(plainLost), len(plainKeys))
	}
	if len(beforeLost) != 0 {
		t.Errorf("acked: %d completions replicated before the freeze lost", len(beforeLost))
	}
}

// waitUntil waits at most a minute for cond.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if ctx.Err() != nil || time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replicaOf returns the address of the primary's one replica.
func replicaOf(t *testing.T, ctx context.Context, pc *redis.Client) string {
	t.Helper()
	info, err := pc.Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "slave0:")
		if !ok {
			continue
		}
		var ip, port string
		for _, f := range strings.Split(v, ",") {
			if x, ok := strings.CutPrefix(f, "ip="); ok {
				ip = x
			}
			if x, ok := strings.CutPrefix(f, "port="); ok {
				port = x
			}
		}
		return net.JoinHostPort(ip, port)
	}
	t.Fatalf("the primary has no replica:\n%s", info)
	return ""
}

// serverPID returns the process ID of the Redis server at addr, which must
// run on this machine.
func serverPID(t *testing.T, ctx context.Context, addr string) int {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		testenv.Unavailable(t, "a local replica", errors.New(addr+" is not on loopback"))
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if pid, err := strconv.Atoi(v); err == nil && pid > 1 {
				return pid
			}
		}
	}
	t.Fatalf("no process_id in INFO of %s", addr)
	return 0
}
