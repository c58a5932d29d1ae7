package boltstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
)

func benchmarkClaimComplete(b *testing.B, opts ...boltstore.Option) {
	s := open(b, filepath.Join(b.TempDir(), "dedupe.db"), opts...)
	ctx := context.Background()
	b.SetParallelism(8) // 8 goroutines per CPU, like a consumer with prefetch
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := s.Claim(ctx, dedupe.Key{Scope: "bench", ID: uuid.New()}, time.Minute)
			if err != nil || c.Status != dedupe.Acquired {
				b.Fatalf("Claim = %s, %v", c.Status, err)
			}
			if err := s.Complete(ctx, c, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkClaimComplete measures claim+complete pairs of distinct keys from
// 8 goroutines per CPU: "fsync" is the durable default (concurrent callers
// share commits), "nosync" shows the cost of the store
// itself without the disk flush.
func BenchmarkClaimComplete(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchmarkClaimComplete(b) })
	b.Run("nosync", func(b *testing.B) { benchmarkClaimComplete(b, boltstore.WithNoSync()) })
}

// BenchmarkClaimCompleteBaseline is raw bbolt for comparison: the same two
// writes per pair (a lease record, then the done record) as separate
// transactions, no read, no expiry index, no group commit.
func BenchmarkClaimCompleteBaseline(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, &bolt.Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			bucket := []byte("raw")
			if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := uuid.New()
					for _, v := range []string{"lease", "done"} {
						if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(id[:], []byte(v)) }); err != nil {
							b.Error(err)
							return
						}
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}

// BenchmarkClaimCompleteBatch is BenchmarkClaimComplete with ClaimBatch
// and CompleteBatch of 16 and 64 keys (each batch one write transaction);
// an op is one batch, so compare pairs/s.
func BenchmarkClaimCompleteBatch(b *testing.B) {
	for _, mode := range []string{"fsync", "nosync"} {
		for _, n := range []int{16, 64} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				var opts []boltstore.Option
				if mode == "nosync" {
					opts = append(opts, boltstore.WithNoSync())
				}
				s := open(b, filepath.Join(b.TempDir(), "dedupe.db"), opts...)
				ctx := context.Background()
				b.SetParallelism(8)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					keys := make([]dedupe.Key, n)
					for pb.Next() {
						for i := range keys {
							keys[i] = dedupe.Key{Scope: "bench", ID: uuid.New()}
						}
						claims, err := s.ClaimBatch(ctx, keys, time.Minute)
						if err != nil {
							b.Fatal(err)
						}
						errs, err := s.CompleteBatch(ctx, claims, 0)
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
}
