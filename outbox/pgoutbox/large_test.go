package pgoutbox_test

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
)

// BenchmarkLargeTable measures the relay's claim on a table that keeps many
// dispatched rows for their retention — -outbox.rows of them, 10 000 000
// for the figure in the package documentation:
//
//	go test ./outbox/pgoutbox/ -run '^$' -bench LargeTable -benchtime 200x -args -outbox.rows=10000000 -outbox.keep
//
// The fill (server-side, in chunks of a million rows, a few minutes for
// 10 M) is kept with -outbox.keep, for later runs, in the table
// outbox_bench_<rows>. Besides the dispatched rows the table holds a backlog
// of 40 000 pending records (four per key, so the claim also takes
// followers) and 100 dead ones. The benchmark logs the EXPLAIN (ANALYZE,
// BUFFERS) of the claim, of the backlog query and of a cleanup batch, then
// times claims of a batch of 500 (claim and release, the relay's fixed
// cost per batch), right after VACUUM and again after 20 000 records were
// dispatched without one.
var (
	benchRows = flag.Int("outbox.rows", 1_000_000, "dispatched rows in BenchmarkLargeTable's table")
	benchKeep = flag.Bool("outbox.keep", false, "keep BenchmarkLargeTable's table for later runs")
)

func BenchmarkLargeTable(b *testing.B) {
	pool := newPool(b)
	ctx := context.Background()
	table := fmt.Sprintf("outbox_bench_%d", *benchRows)
	s, err := pgoutbox.New(pool, pgoutbox.WithTable(table))
	if err != nil {
		b.Fatal(err)
	}
	if !*benchKeep {
		b.Cleanup(func() { testenv.DropTables(b, s.Table()) })
	}
	var have int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = $1", table).Scan(&have); err != nil {
		b.Fatal(err)
	}
	if have == 0 {
		fillLarge(b, pool, s, *benchRows)
	}
	// Restore the backlog a previous run consumed, then VACUUM ANALYZE.
	if _, err := pool.Exec(ctx, "UPDATE "+s.Table()+" SET state = 'pending', due_at = created_at, done_at = NULL WHERE destination = 'orders' AND body = 'backlog'"); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE "+s.Table()); err != nil {
		b.Fatal(err)
	}
	var size string
	var rows, pending int64
	if err := pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size($1::regclass)),
		(SELECT count(*) FROM `+s.Table()+`), (SELECT count(*) FROM `+s.Table()+` WHERE state = 'pending')`, s.Table()).Scan(&size, &rows, &pending); err != nil {
		b.Fatal(err)
	}
	b.Logf("table %s: %d rows (%d pending), %s with indexes", s.Table(), rows, pending, size)

	logPlan(b, pool, "claim of 500", pgoutbox.ClaimSQL(s), "orders", 500)
	logPlan(b, pool, "backlog", pgoutbox.BacklogSQL(s))
	logPlan(b, pool, "cleanup batch of 1000 (retention 1 h)", pgoutbox.CleanupSQL(s), int64(time.Hour/time.Microsecond), 1000)

	b.Run("after-vacuum", func(b *testing.B) { benchClaim(b, s) })
	// Dispatch 20 000 records with no VACUUM in between: the pending
	// indexes now hold their dead entries.
	for range 40 {
		bt, err := s.Claim(ctx, "orders", 500)
		if err != nil {
			b.Fatal(err)
		}
		if err := bt.Finish(ctx, outbox.Outcome{Dispatched: seqs(bt.Records())}); err != nil {
			b.Fatal(err)
		}
	}
	logPlan(b, pool, "claim of 500 after 20 000 dispatches without VACUUM", pgoutbox.ClaimSQL(s), "orders", 500)
	b.Run("after-20000-dispatches", func(b *testing.B) { benchClaim(b, s) })
}

func benchClaim(b *testing.B, s *pgoutbox.Store) {
	ctx := context.Background()
	n := 0
	for b.Loop() {
		bt, err := s.Claim(ctx, "orders", 500)
		if err != nil {
			b.Fatal(err)
		}
		n += len(bt.Records())
		if err := bt.Finish(ctx, outbox.Outcome{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/float64(b.N), "records/claim")
}

// fillLarge fills the table with rows dispatched over the last day, the
// backlog and the dead rows.
func fillLarge(b *testing.B, pool *pgxpool.Pool, s *pgoutbox.Store, rows int) {
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	const chunk = 1_000_000
	for lo := 0; lo < rows; lo += chunk {
		hi := min(lo+chunk, rows)
		_, err := pool.Exec(ctx, `INSERT INTO `+s.Table()+`
			(destination, message_id, correlation_id, type, msg_key, body, created_at, state, due_at, done_at)
			SELECT CASE WHEN g % 10 = 0 THEN 'audit' ELSE 'orders' END, id, id, 'order.placed',
				convert_to('SO-' || g, 'UTF8'), convert_to(repeat('x', 200), 'UTF8'), t, 'dispatched', NULL, t + interval '20 ms'
			FROM (SELECT g, gen_random_uuid() AS id,
				clock_timestamp() - interval '24 hours' + (g::float8 / $3) * interval '24 hours' AS t
				FROM generate_series($1::bigint, $2::bigint - 1) AS g) AS x`, lo, hi, rows)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("filled %d of %d dispatched rows (%v)", hi, rows, time.Since(began).Round(time.Second))
	}
	_, err := pool.Exec(ctx, `INSERT INTO `+s.Table()+` (destination, message_id, correlation_id, type, msg_key, body)
		SELECT 'orders', id, id, 'order.placed', convert_to('B-' || (g % 10000), 'UTF8'), convert_to('backlog', 'UTF8')
		FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, 40000) AS g) AS x`)
	if err != nil {
		b.Fatal(err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO `+s.Table()+` (destination, message_id, correlation_id, type, body, state, due_at, done_at, last_error)
		SELECT 'orders', id, id, 'order.placed', convert_to('dead', 'UTF8'), 'dead', NULL, clock_timestamp(), 'unroutable'
		FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 100)) AS x`)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("fill done in %v", time.Since(began).Round(time.Second))
}

// logPlan logs EXPLAIN (ANALYZE, BUFFERS) of sql, run in a transaction
// that is rolled back.
func logPlan(b *testing.B, pool *pgxpool.Pool, what, sql string, args ...any) {
	b.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
		if err != nil {
			return err
		}
		var lines []string
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				return err
			}
			lines = append(lines, l)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		b.Logf("EXPLAIN ANALYZE %s:\n%s", what, strings.Join(lines, "\n"))
		return errRollback
	})
	if err != nil && err != errRollback {
		b.Fatal(err)
	}
}

var errRollback = fmt.Errorf("rollback")
