package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// The relay's throughput next to the PublishBatch rate of the same
// publisher into the same broker, the same for the simplest drain of a
// table (the bound any relay on PostgreSQL meets), and the
// enqueue-to-published latency:
//
//	go test -run '^$' -bench 'RelayThroughput|RelayFloor' -benchtime 5x ./outbox/
//	go test -run '^$' -bench 'Latency' -benchtime 2000x ./outbox/

const (
	benchMessages = 4000
	benchBody     = 256
)

// benchTarget is one broker's publisher and a way to count what it got.
type benchTarget struct {
	name string
	pub  func(b *testing.B) publisher.Publisher
}

func benchTargets(b *testing.B) []benchTarget {
	return []benchTarget{
		{"rabbitmq", func(b *testing.B) publisher.Publisher {
			rb := newRabbit(b)
			return rb.publisher(b)
		}},
		{"kafka", func(b *testing.B) publisher.Publisher {
			return newKafka(b).publisher(b)
		}},
	}
}

// benchMsgs returns n messages of distinct keys (the relay's best case and
// the usual one: many entities, each with few events in flight).
func benchMsgs(round, n int) []publisher.Message {
	body := make([]byte, benchBody)
	msgs := make([]publisher.Message, n)
	for i := range msgs {
		msgs[i] = publisher.Message{Type: "order.placed", Key: []any{fmt.Sprintf("r%d-SO-%06d", round, i)}, Body: body}
	}
	return msgs
}

// BenchmarkRelayThroughput compares, in interleaved rounds of
// benchMessages messages each, how fast a relay drains a backlog into a
// broker with how fast one goroutine calling PublishBatch with batches of
// the same size (outbox.DefaultBatchSize) publishes the same kind of
// messages with the same publisher. The relay runs with its defaults
// (relay-msgs/s: DefaultBatchSize, DefaultWorkers workers) and with one
// worker (relay-1-worker-msgs/s). It reports the median rate of each and
// the median of the per-round ratios relay / PublishBatch.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, tgt := range benchTargets(b) {
		b.Run(tgt.name, func(b *testing.B) {
			pool := newPool(b)
			s := newStore(b, pool)
			pub := tgt.pub(b)
			// Warm up: connections, topic creation.
			if err := pub.PublishBatch(context.Background(), benchMsgs(-1, 10)...); err != nil {
				b.Fatal(err)
			}
			var relayRates, oneRates, directRates, ratios, oneRatios []float64
			b.ResetTimer()
			for i := range b.N {
				rounds := []func(){
					func() { relayRates = append(relayRates, relayRound(b, pool, s, pub, 3*i)) },
					func() { oneRates = append(oneRates, relayRound(b, pool, s, pub, 3*i+1, outbox.WithWorkers(1))) },
					func() { directRates = append(directRates, directRound(b, pub, 3*i+2)) },
				}
				rotate(i, rounds)
				ratios = append(ratios, relayRates[i]/directRates[i])
				oneRatios = append(oneRatios, oneRates[i]/directRates[i])
			}
			b.StopTimer()
			b.ReportMetric(median(relayRates), "relay-msgs/s")
			b.ReportMetric(median(oneRates), "relay-1-worker-msgs/s")
			b.ReportMetric(median(directRates), "publishbatch-msgs/s")
			b.ReportMetric(median(ratios), "ratio")
			b.ReportMetric(median(oneRatios), "ratio-1-worker")
		})
	}
}

// BenchmarkRelayFloor bounds what a relay on a PostgreSQL table can reach
// here, next to PublishBatch alone (as in BenchmarkRelayThroughput), in
// interleaved rounds of benchMessages messages, one worker, batches of
// outbox.DefaultBatchSize, each batch published with PublishBatch:
//
//   - bare: one statement per batch deletes the oldest rows of a table and
//     returns them. No state kept, no row locks, no order per key, no
//     retries: the least any table-based relay does.
//   - locked: what the outbox must do at the least — claim the oldest
//     pending rows with FOR UPDATE SKIP LOCKED in a transaction, publish,
//     mark them dispatched (they stay for the retention) and commit, with
//     synchronous_commit off as the relay does. No order per key, no
//     retries.
//
// It reports each one's median rate, PublishBatch's, the medians of the
// per-round ratios (bare-ratio, locked-ratio), and the rate of the bare
// drain without publishing (table-msgs/s).
func BenchmarkRelayFloor(b *testing.B) {
	for _, tgt := range benchTargets(b) {
		b.Run(tgt.name, func(b *testing.B) {
			ctx := context.Background()
			pool := newPool(b)
			pub := tgt.pub(b)
			if err := pub.PublishBatch(ctx, benchMsgs(-1, 10)...); err != nil {
				b.Fatal(err)
			}
			table := pgx.Identifier{testenv.Name(b, "floor")}.Sanitize()
			for _, ddl := range []string{
				"CREATE TABLE " + table + ` (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
					id uuid NOT NULL, type text NOT NULL, msg_key bytea, body bytea NOT NULL,
					state text NOT NULL DEFAULT 'pending', done_at timestamptz)`,
				"CREATE INDEX ON " + table + " (seq) WHERE state = 'pending'",
			} {
				if _, err := pool.Exec(ctx, ddl); err != nil {
					b.Fatal(err)
				}
			}
			b.Cleanup(func() { testenv.DropTables(b, table) })
			scan := func(r pgx.CollectableRow) (publisher.Message, error) {
				var m publisher.Message
				var key []byte
				err := r.Scan(&m.ID, &m.Type, &key, &m.Body)
				m.Key = []any{string(key)}
				return m, err
			}
			// next takes one batch: bare deletes it, locked claims it in tx.
			bare := func() ([]publisher.Message, func()) {
				rows, _ := pool.Query(ctx, "DELETE FROM "+table+" WHERE seq IN (SELECT seq FROM "+table+
					" ORDER BY seq LIMIT $1) RETURNING id, type, msg_key, body", outbox.DefaultBatchSize)
				batch, err := pgx.CollectRows(rows, scan)
				if err != nil {
					b.Fatal(err)
				}
				return batch, func() {}
			}
			locked := func() ([]publisher.Message, func()) {
				tx, err := pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				rows, _ := tx.Query(ctx, "SELECT seq, id, type, msg_key, body FROM "+table+
					" WHERE state = 'pending' ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED", outbox.DefaultBatchSize)
				var seqs []int64
				batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (publisher.Message, error) {
					var m publisher.Message
					var seq int64
					var key []byte
					err := r.Scan(&seq, &m.ID, &m.Type, &key, &m.Body)
					m.Key = []any{string(key)}
					seqs = append(seqs, seq)
					return m, err
				})
				if err != nil {
					b.Fatal(err)
				}
				return batch, func() {
					var q pgx.Batch
					q.Queue("SET LOCAL synchronous_commit = off")
					q.Queue("UPDATE "+table+" SET state = 'dispatched', done_at = clock_timestamp() WHERE seq = ANY($1)", seqs)
					if err := tx.SendBatch(ctx, &q).Close(); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			var bareRates, lockedRates, tableRates, directRates, bareRatios, lockedRatios []float64
			b.ResetTimer()
			for i := range b.N {
				drain := func(round int, next func() ([]publisher.Message, func()), send bool) float64 {
					msgs := benchMsgs(round, benchMessages)
					ids, types, keys, bodies := make([]uuid.UUID, len(msgs)), make([]string, len(msgs)), make([][]byte, len(msgs)), make([][]byte, len(msgs))
					for j, m := range msgs {
						ids[j], types[j], keys[j], bodies[j] = idOf(b, m), m.Type, []byte(m.Key[0].(string)), m.Body
					}
					if _, err := pool.Exec(ctx, "TRUNCATE "+table); err != nil {
						b.Fatal(err)
					}
					if _, err := pool.Exec(ctx, "INSERT INTO "+table+" (id, type, msg_key, body) SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[])",
						ids, types, keys, bodies); err != nil {
						b.Fatal(err)
					}
					began := time.Now()
					for {
						batch, done := next()
						if len(batch) == 0 {
							done()
							return benchMessages / time.Since(began).Seconds()
						}
						if send {
							if err := pub.PublishBatch(ctx, batch...); err != nil {
								b.Fatal(err)
							}
						}
						done()
					}
				}
				rounds := []func(){
					func() { bareRates = append(bareRates, drain(4*i, bare, true)) },
					func() { lockedRates = append(lockedRates, drain(4*i+1, locked, true)) },
					func() { tableRates = append(tableRates, drain(4*i+2, bare, false)) },
					func() { directRates = append(directRates, directRound(b, pub, 4*i+3)) },
				}
				rotate(i, rounds)
				bareRatios = append(bareRatios, bareRates[i]/directRates[i])
				lockedRatios = append(lockedRatios, lockedRates[i]/directRates[i])
			}
			b.StopTimer()
			b.ReportMetric(median(bareRates), "bare-msgs/s")
			b.ReportMetric(median(lockedRates), "locked-msgs/s")
			b.ReportMetric(median(tableRates), "table-msgs/s")
			b.ReportMetric(median(directRates), "publishbatch-msgs/s")
			b.ReportMetric(median(bareRatios), "bare-ratio")
			b.ReportMetric(median(lockedRatios), "locked-ratio")
		})
	}
}

// relayRound starts a relay on the empty outbox, enqueues benchMessages
// messages in one transaction, and returns the rate from that commit to
// the last message dispatched.
func relayRound(b *testing.B, pool *pgxpool.Pool, s *pgoutbox.Store, pub publisher.Publisher, round int, opts ...outbox.Option) float64 {
	b.Helper()
	ctx := context.Background()
	msgs := benchMsgs(round, benchMessages)
	p, err := pgoutbox.NewPublisher(s, "bench", gen)
	if err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	obs := observerFuncs{dispatched: func(*outbox.Record) {
		if n.Add(1) == benchMessages {
			close(done)
		}
	}}
	opts = append([]outbox.Option{outbox.WithObserver(obs), outbox.WithLogger(testLogger(b))}, opts...)
	r, err := outbox.NewRelay(s, map[string]publisher.Publisher{"bench": pub}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(rctx) }()
	time.Sleep(100 * time.Millisecond) // listening; the first claims found nothing
	var began time.Time
	err = pgxBegin(ctx, pool, func(c context.Context) error {
		for i := 0; i < len(msgs); i += 500 {
			if err := p.PublishBatch(c, msgs[i:min(i+500, len(msgs))]...); err != nil {
				return err
			}
		}
		began = time.Now() // the commit follows at once
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("dispatched %d of %d", n.Load(), benchMessages)
	}
	elapsed := time.Since(began)
	cancel()
	<-stopped
	if _, err := pool.Exec(ctx, "TRUNCATE "+s.Table()); err != nil {
		b.Fatal(err)
	}
	return benchMessages / elapsed.Seconds()
}

// directRound publishes benchMessages messages with PublishBatch calls of
// outbox.DefaultBatchSize and returns the rate.
func directRound(b *testing.B, pub publisher.Publisher, round int) float64 {
	b.Helper()
	msgs := benchMsgs(round, benchMessages)
	began := time.Now()
	for i := 0; i < len(msgs); i += outbox.DefaultBatchSize {
		if err := pub.PublishBatch(context.Background(), msgs[i:min(i+outbox.DefaultBatchSize, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
	return benchMessages / time.Since(began).Seconds()
}

// rotate runs rounds, starting with the i-th: the order changes from one
// iteration to the next, so that none is always first or last.
func rotate(i int, rounds []func()) {
	for j := range rounds {
		rounds[(i+j)%len(rounds)]()
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p * float64(len(s)-1))
	return s[i]
}

// BenchmarkLatency measures enqueue-to-published latency: from the commit
// of the transaction that enqueued a message to the moment the relay has
// the broker's confirm and has marked it dispatched. "idle" enqueues one
// message at a time and waits for it (the relay is woken by the commit's
// notification; its poll interval is the default second); "1000-per-s"
// enqueues b.N messages at 1000 per second, one transaction each, from 16
// goroutines. It reports p50 and p99 in milliseconds. Run with a fixed
// count, e.g. -benchtime 2000x.
func BenchmarkLatency(b *testing.B) {
	for _, tgt := range benchTargets(b) {
		for _, load := range []string{"idle", "1000-per-s"} {
			b.Run(tgt.name+"/"+load, func(b *testing.B) {
				pool := newPool(b)
				s := newStore(b, pool)
				pub := tgt.pub(b)
				if err := pub.PublishBatch(context.Background(), benchMsgs(-1, 10)...); err != nil {
					b.Fatal(err)
				}
				var (
					mu           sync.Mutex
					committed    = map[uuid.UUID]time.Time{}
					dispatchedAt = map[uuid.UUID]time.Time{}
					done         = make(chan uuid.UUID, b.N+10)
				)
				obs := observerFuncs{dispatched: func(r *outbox.Record) {
					now := time.Now()
					mu.Lock()
					dispatchedAt[r.ID] = now
					mu.Unlock()
					done <- r.ID
				}}
				r, err := outbox.NewRelay(s, map[string]publisher.Publisher{"bench": pub}, outbox.WithObserver(obs), outbox.WithLogger(testLogger(b)))
				if err != nil {
					b.Fatal(err)
				}
				rctx, cancel := context.WithCancel(context.Background())
				stopped := make(chan error, 1)
				go func() { stopped <- r.Run(rctx) }()
				defer func() { cancel(); <-stopped }()
				time.Sleep(200 * time.Millisecond) // listening, first claims done
				p, err := pgoutbox.NewPublisher(s, "bench", gen)
				if err != nil {
					b.Fatal(err)
				}
				msgs := benchMsgs(0, b.N)
				enqueueOne := func(m publisher.Message) {
					id := idOf(b, m)
					if err := pgxBegin(context.Background(), pool, func(c context.Context) error { return p.Publish(c, m) }); err != nil {
						b.Error(err)
						return
					}
					now := time.Now()
					mu.Lock()
					committed[id] = now
					mu.Unlock()
				}
				b.ResetTimer()
				if load == "idle" {
					for i := range b.N {
						enqueueOne(msgs[i])
						<-done
						time.Sleep(5 * time.Millisecond)
					}
				} else {
					start := time.Now()
					var next atomic.Int64
					var wg sync.WaitGroup
					for range 16 {
						wg.Go(func() {
							for {
								i := int(next.Add(1) - 1)
								if i >= b.N {
									return
								}
								time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond)))
								enqueueOne(msgs[i])
							}
						})
					}
					wg.Wait()
					for range b.N {
						<-done
					}
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "enqueued-msgs/s")
				}
				b.StopTimer()
				mu.Lock()
				defer mu.Unlock()
				var lat []time.Duration
				for id, c := range committed {
					// The relay can be done before this goroutine, back from
					// COMMIT, took the time: that counts as 0.
					lat = append(lat, max(dispatchedAt[id].Sub(c), 0))
				}
				b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "max-ms")
			})
		}
	}
}
