package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// BenchmarkClaimComplete claims and completes distinct keys from parallel
// goroutines. It reports claim+complete pairs per second and the round trips
// each call took: statements per call (rt/claim, rt/complete) and requests
// written to the network per pair (writes/pair; statement preparation on a
// fresh connection adds a little).
func BenchmarkClaimComplete(b *testing.B) {
	cnt := &counter{}
	pool := newPool(b, cnt, 16)
	s := newStore(b, pool)
	var claims, completes atomic.Int64
	ctx := context.Background()
	claimCtx, completeCtx := withCount(ctx, &claims), withCount(ctx, &completes)
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

// BenchmarkProcess runs the transactional inbox on distinct keys with a
// handler that does nothing, reporting messages per second and the round
// trips per message: claim, BEGIN, completion, COMMIT.
func BenchmarkProcess(b *testing.B) {
	cnt := &counter{}
	pool := newPool(b, cnt, 16)
	s := newStore(b, pool)
	ctx := context.Background()
	b.SetParallelism(8)
	w0 := cnt.writes.Load()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := s.Process(ctx, dedupe.Key{Scope: "bench", ID: uuid.New()}, time.Minute, time.Minute,
				func(context.Context) error { return nil })
			if err != nil || c.Status != dedupe.Acquired {
				b.Errorf("Process = %s, %v", c.Status, err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cnt.writes.Load()-w0)/n, "writes/msg")
}

// BenchmarkClaimCompleteBatch is BenchmarkClaimComplete with ClaimBatch and
// CompleteBatch of 16 and 64 keys, one statement each; an op is one batch,
// so compare pairs/s.
func BenchmarkClaimCompleteBatch(b *testing.B) {
	for _, n := range []int{16, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cnt := &counter{}
			s := newStore(b, newPool(b, cnt, 16))
			ctx := context.Background()
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

// BenchmarkProcessBatch is BenchmarkProcess with ProcessBatch of 16 and 64
// messages (one transaction per group) and a handler that does nothing,
// or, in the "-write" cases, inserts one row through the transaction (a
// savepoint each).
func BenchmarkProcessBatch(b *testing.B) {
	for _, n := range []int{16, 64} {
		for _, write := range []bool{false, true} {
			name := fmt.Sprint(n)
			if write {
				name += "-write"
			}
			b.Run(name, func(b *testing.B) {
				cnt := &counter{}
				pool := newPool(b, cnt, 16)
				s := newStore(b, pool)
				fx := newEffects(b, pool)
				ctx := context.Background()
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
						res, err := s.ProcessBatch(ctx, keys, time.Minute, time.Minute, func(ctx context.Context, i int) error {
							if !write {
								return nil
							}
							tx, _ := pgstore.TxFromContext(ctx)
							_, err := tx.Exec(ctx, fx.insertSQL(), keys[i].ID)
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
						for _, r := range res {
							if r.Err != nil || !r.Claim.Acquired() {
								b.Errorf("ProcessBatch result %s, %v", r.Claim.Status, r.Err)
								return
							}
						}
					}
				})
				elapsed := time.Since(start)
				b.StopTimer()
				msgs := float64(b.N * n)
				b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(cnt.writes.Load()-w0)/msgs, "writes/msg")
			})
		}
	}
}
