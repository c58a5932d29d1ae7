package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
)

// newMemory returns a memory store closed when t ends.
func newMemory(t testing.TB, opts ...dedupe.MemoryOption) *dedupe.Memory {
	t.Helper()
	m, err := dedupe.NewMemory(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMemoryConformance(t *testing.T) {
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store { return newMemory(t) },
		Broken: func(t *testing.T) dedupe.Store {
			m := newMemory(t)
			m.Close()
			return m
		},
		Forever:     true,
		ErrorPrefix: "dedupe: ",
	})
}

// TestMemoryOptions: every invalid option value is an error from NewMemory
// that names the option.
func TestMemoryOptions(t *testing.T) {
	bad := map[string]dedupe.MemoryOption{
		"WithMaxEntries":       dedupe.WithMaxEntries(0),
		"WithDefaultLease":     dedupe.WithDefaultLease(-time.Second),
		"WithDefaultRetention": dedupe.WithDefaultRetention(-2 * time.Second),
		"WithSweepInterval":    dedupe.WithSweepInterval(0),
	}
	for name, o := range bad {
		m, err := dedupe.NewMemory(o)
		if err == nil {
			m.Close()
			t.Errorf("%s: NewMemory accepted an invalid value", name)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "dedupe: "+name+"(") || strings.Count(msg, "dedupe:") != 1 {
			t.Errorf("%s: error %q, want it to start with %q and name the package once", name, msg, "dedupe: "+name)
		}
	}
	if _, err := dedupe.NewMemory(dedupe.WithDefaultLease(0)); !errors.Is(err, dedupe.ErrInvalidDuration) {
		t.Errorf("WithDefaultLease(0): %v, want ErrInvalidDuration", err)
	}
	m, err := dedupe.NewMemory(nil, dedupe.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		t.Fatalf("NewMemory(nil, WithDefaultRetention(Forever)): %v", err)
	}
	m.Close()
}

// A small store has one shard, so these bounds are exact.
func TestMemoryEviction(t *testing.T) {
	ctx := context.Background()
	key := func() dedupe.Key { return dedupe.Key{Scope: "evict", ID: uuid.New()} }
	claim := func(t *testing.T, m *dedupe.Memory, k dedupe.Key, lease time.Duration, want dedupe.Status) dedupe.Claim {
		t.Helper()
		c, err := m.Claim(ctx, k, lease)
		if err != nil || c.Status != want {
			t.Fatalf("Claim(%s) = %s, %v; want %s", k, c.Status, err, want)
		}
		return c
	}

	t.Run("live leases are never evicted", func(t *testing.T) {
		m := newMemory(t, dedupe.WithMaxEntries(4))
		var held []dedupe.Claim
		for range 4 {
			held = append(held, claim(t, m, key(), time.Minute, dedupe.Acquired))
		}
		k := key()
		_, err := m.Claim(ctx, k, time.Minute)
		if !errors.Is(err, dedupe.ErrFull) {
			t.Fatalf("Claim on a store full of live leases: %v, want ErrFull", err)
		}
		for _, c := range held {
			claim(t, m, c.Key, time.Minute, dedupe.InFlight)
		}
		if err := m.Release(ctx, held[0]); err != nil {
			t.Fatal(err)
		}
		claim(t, m, k, time.Minute, dedupe.Acquired)
	})

	t.Run("oldest completed goes first", func(t *testing.T) {
		m := newMemory(t, dedupe.WithMaxEntries(4))
		var done []dedupe.Key
		for range 3 {
			c := claim(t, m, key(), time.Minute, dedupe.Acquired)
			if err := m.Complete(ctx, c, dedupe.Forever); err != nil {
				t.Fatal(err)
			}
			done = append(done, c.Key)
		}
		live := claim(t, m, key(), time.Minute, dedupe.Acquired)
		claim(t, m, key(), time.Minute, dedupe.Acquired) // evicts done[0]
		claim(t, m, done[1], time.Minute, dedupe.Duplicate)
		claim(t, m, done[2], time.Minute, dedupe.Duplicate)
		claim(t, m, live.Key, time.Minute, dedupe.InFlight)
		claim(t, m, done[0], time.Minute, dedupe.Acquired) // evicts done[1]
		if n := m.Len(); n != 4 {
			t.Fatalf("Len = %d, want 4", n)
		}
	})

	t.Run("expired entries go before completed ones", func(t *testing.T) {
		m := newMemory(t, dedupe.WithMaxEntries(4))
		expired := claim(t, m, key(), 20*time.Millisecond, dedupe.Acquired)
		var done []dedupe.Key
		for range 2 {
			c := claim(t, m, key(), time.Minute, dedupe.Acquired)
			if err := m.Complete(ctx, c, time.Hour); err != nil {
				t.Fatal(err)
			}
			done = append(done, c.Key)
		}
		live := claim(t, m, key(), time.Minute, dedupe.Acquired)
		time.Sleep(40 * time.Millisecond)
		claim(t, m, key(), time.Minute, dedupe.Acquired)
		for _, k := range done {
			claim(t, m, k, time.Minute, dedupe.Duplicate)
		}
		claim(t, m, live.Key, time.Minute, dedupe.InFlight)
		if err := m.Complete(ctx, expired, 0); !errors.Is(err, dedupe.ErrLeaseLost) {
			t.Fatalf("Complete of a swept lease: %v, want ErrLeaseLost", err)
		}
	})
}

func TestMemoryDefaults(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t, dedupe.WithDefaultLease(time.Hour), dedupe.WithDefaultRetention(2*time.Hour))
	k := dedupe.Key{Scope: "defaults", ID: uuid.New()}
	c, err := m.Claim(ctx, k, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Until); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("lease 0 with WithDefaultLease(1h) ends in %v", d)
	}
	if err := m.Complete(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	d, err := m.Claim(ctx, k, 0)
	if err != nil || d.Status != dedupe.Duplicate {
		t.Fatalf("Claim = %s, %v", d.Status, err)
	}
	if r := time.Until(d.Until); r < 119*time.Minute || r > 2*time.Hour {
		t.Fatalf("retention 0 with WithDefaultRetention(2h) ends in %v", r)
	}
}

func TestMemorySweep(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t, dedupe.WithSweepInterval(10*time.Millisecond))
	for i := range 100 {
		c, err := m.Claim(ctx, dedupe.Key{Scope: "sweep", ID: uuid.New()}, 5*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := m.Complete(ctx, c, 5*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	forever, _ := m.Claim(ctx, dedupe.Key{Scope: "sweep", ID: uuid.New()}, time.Minute)
	if err := m.Complete(ctx, forever, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Len() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Len = %d after the sweep, want 1 (the key kept forever)", m.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMemoryClose(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 50 {
		m, err := dedupe.NewMemory(dedupe.WithSweepInterval(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after closing 50 stores, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}

	m := newMemory(t)
	ctx := context.Background()
	c, err := m.Claim(ctx, dedupe.Key{Scope: "close", ID: uuid.New()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := m.Claim(ctx, c.Key, time.Minute); !errors.Is(err, dedupe.ErrClosed) {
		t.Fatalf("Claim after Close: %v", err)
	}
	// errors.Is works through the caller's own wrapping too.
	err = fmt.Errorf("consumer: %w", m.Complete(ctx, c, 0))
	if !errors.Is(fmt.Errorf("outer: %w", err), dedupe.ErrClosed) {
		t.Fatalf("Complete after Close: %v", err)
	}
	if err := m.Release(ctx, c); !errors.Is(err, dedupe.ErrClosed) {
		t.Fatalf("Release after Close: %v", err)
	}
	if m.Len() != 0 {
		t.Fatalf("Len after Close = %d", m.Len())
	}
}

// Close racing with calls: every call either works or returns ErrClosed.
func TestMemoryCloseConcurrent(t *testing.T) {
	m := newMemory(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				c, err := m.Claim(ctx, dedupe.Key{Scope: "race", ID: uuid.New()}, time.Minute)
				if err == nil {
					err = m.Complete(ctx, c, 0)
				}
				if err != nil && !errors.Is(err, dedupe.ErrClosed) {
					bad.Store(err)
				}
			}
		})
	}
	time.Sleep(time.Millisecond)
	m.Close()
	wg.Wait()
	if err := bad.Load(); err != nil {
		t.Fatalf("call racing Close: %v", err)
	}
}

// The largest durations saturate instead of overflowing into the past.
func TestMemoryHugeDurations(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t)
	k := dedupe.Key{Scope: "huge", ID: uuid.New()}
	c, err := m.Claim(ctx, k, math.MaxInt64)
	if err != nil || c.Status != dedupe.Acquired {
		t.Fatalf("Claim = %s, %v", c.Status, err)
	}
	if in, _ := m.Claim(ctx, k, time.Minute); in.Status != dedupe.InFlight {
		t.Fatalf("second Claim = %s, want in flight", in.Status)
	}
	if err := m.Complete(ctx, c, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if d, _ := m.Claim(ctx, k, time.Minute); d.Status != dedupe.Duplicate {
		t.Fatalf("Claim after Complete = %s, want duplicate", d.Status)
	}
}
