package dedupe_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// benchKeys gives each parallel benchmark goroutine distinct keys without
// allocating.
func benchKeys() func() dedupe.Key {
	id := uuid.New() // random first half per goroutine, a counter in the second
	var n uint64
	return func() dedupe.Key {
		n++
		binary.LittleEndian.PutUint64(id[8:], n*0x9E3779B97F4A7C15)
		return dedupe.Key{Scope: "bench", ID: id}
	}
}

// BenchmarkClaimComplete measures claim+complete pairs of distinct keys from
// parallel goroutines on the default store. It holds at most
// DefaultMaxEntries keys (~100 MB, far beyond the CPU caches), so a long run
// also measures eviction.
func BenchmarkClaimComplete(b *testing.B) { benchmarkClaimComplete(b) }

// BenchmarkClaimCompleteSmall is the same on a store of 65536 keys, whose
// working set stays in the CPU caches.
func BenchmarkClaimCompleteSmall(b *testing.B) {
	benchmarkClaimComplete(b, dedupe.WithMaxEntries(1<<16))
}

func benchmarkClaimComplete(b *testing.B, opts ...dedupe.MemoryOption) {
	m := newMemory(b, opts...)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		next := benchKeys()
		for pb.Next() {
			c, err := m.Claim(ctx, next(), time.Minute)
			if err != nil || c.Status != dedupe.Acquired {
				b.Fatalf("Claim = %s, %v", c.Status, err)
			}
			if err := m.Complete(ctx, c, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkClaimCompleteBaseline is the naive store for comparison: one map
// under one mutex, no bound, no expiry.
func BenchmarkClaimCompleteBaseline(b *testing.B) {
	var (
		mu   sync.Mutex
		seen = make(map[dedupe.Key]bool)
	)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		next := benchKeys()
		for pb.Next() {
			k := next()
			mu.Lock()
			if _, ok := seen[k]; ok {
				mu.Unlock()
				b.Fatal("duplicate key")
			}
			seen[k] = false
			mu.Unlock()
			mu.Lock()
			seen[k] = true
			mu.Unlock()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkClaimCompleteBatch is BenchmarkClaimCompleteSmall with
// ClaimBatch and CompleteBatch of 16 and 64 keys; an op is one batch, so
// compare pairs/s.
func BenchmarkClaimCompleteBatch(b *testing.B) {
	for _, n := range []int{16, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := newMemory(b, dedupe.WithMaxEntries(1<<16))
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				next := benchKeys()
				keys := make([]dedupe.Key, n)
				for pb.Next() {
					for i := range keys {
						keys[i] = next()
					}
					claims, err := m.ClaimBatch(ctx, keys, time.Minute)
					if err != nil {
						b.Fatal(err)
					}
					errs, err := m.CompleteBatch(ctx, claims, 0)
					if err != nil {
						b.Fatal(err)
					}
					for _, err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}
