package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// BenchmarkClaimComplete claims and completes distinct keys from parallel
// goroutines. It reports claim+complete pairs per second and the round trips
// each call took: commands seen by the client (rt/claim, rt/complete) and
// requests written to the network per pair (writes/pair).
func BenchmarkClaimComplete(b *testing.B) {
	cnt := &counter{}
	s := newStore(b, newClient(b, cnt))
	var claims, completes atomic.Int64
	ctx := context.Background()
	claimCtx, completeCtx := withCount(ctx, &claims), withCount(ctx, &completes)
	// Load the scripts before timing.
	warm, err := s.Claim(ctx, dedupe.Key{Scope: "bench", ID: uuid.New()}, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Complete(ctx, warm, time.Minute); err != nil {
		b.Fatal(err)
	}
	// Network stores are latency-bound: keep several calls in flight per CPU.
	b.SetParallelism(8)
	w0 := cnt.writes.Load()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := s.Claim(claimCtx, dedupe.Key{Scope: "bench", ID: uuid.New()}, time.Minute)
			if err != nil {
				b.Error(err)
				return
			}
			if !c.Acquired() {
				b.Errorf("Claim of a fresh key = %s", c.Status)
				return
			}
			if err := s.Complete(completeCtx, c, time.Minute); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/elapsed.Seconds(), "pairs/s")
	b.ReportMetric(float64(claims.Load())/n, "rt/claim")
	b.ReportMetric(float64(completes.Load())/n, "rt/complete")
	b.ReportMetric(float64(cnt.writes.Load()-w0)/n, "writes/pair")
}

// BenchmarkClaimCompleteBatch is BenchmarkClaimComplete with ClaimBatch and
// CompleteBatch of 16 and 64 keys, each one pipeline; an op is one batch, so
// compare pairs/s. writes/pair is the requests written to the network per
// claim+complete pair.
func BenchmarkClaimCompleteBatch(b *testing.B) {
	for _, n := range []int{16, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cnt := &counter{}
			s := newStore(b, newClient(b, cnt))
			ctx := context.Background()
			warm, err := s.ClaimBatch(ctx, []dedupe.Key{{Scope: "bench", ID: uuid.New()}}, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.CompleteBatch(ctx, warm, time.Minute); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			w0 := cnt.writes.Load()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				keys := make([]dedupe.Key, n)
				for pb.Next() {
					for i := range keys {
						keys[i] = dedupe.Key{Scope: "bench", ID: uuid.New()}
					}
					claims, err := s.ClaimBatch(ctx, keys, time.Minute)
					if err != nil {
						b.Error(err)
						return
					}
					errs, err := s.CompleteBatch(ctx, claims, time.Minute)
					if err = errors.Join(append(errs, err)...); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			pairs := float64(b.N * n)
			b.ReportMetric(pairs/elapsed.Seconds(), "pairs/s")
			b.ReportMetric(float64(cnt.writes.Load()-w0)/pairs, "writes/pair")
		})
	}
}

// BenchmarkReplicaAcks is BenchmarkClaimComplete on the Sentinel setup's
// primary (one replica) through a failover client, without ("plain", the
// baseline) and with WithReplicaAcks(1, …), whose completions wait for the
// replica in the same round trip.
func BenchmarkReplicaAcks(b *testing.B) {
	client := failoverClient(b, testenv.RedisSentinel(b))
	for _, bc := range []struct {
		name string
		opts []redisstore.Option
	}{
		{"plain", nil},
		{"acks", []redisstore.Option{redisstore.WithReplicaAcks(1, time.Second)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSharedStore(b, client, bc.opts...)
			ctx := context.Background()
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := s.Claim(ctx, dedupe.Key{Scope: "bench", ID: uuid.New()}, time.Minute)
					if err == nil {
						err = s.Complete(ctx, c, time.Minute)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
		})
	}
}
