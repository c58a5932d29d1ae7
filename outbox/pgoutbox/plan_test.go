package pgoutbox_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// TestClaimPlan: the claim reads the pending indexes with every condition
// as an index condition — the key's predecessors looked up by (destination,
// key_hash, seq), the due records by (destination, due_at) — also on a
// table whose statistics are stale (a backlog that appeared since the last
// ANALYZE). A plan that joins each candidate against all of the
// destination's pending records instead makes every claim quadratic in the
// backlog (observed: 0.8 s per claim of 200 records over 4000 pending
// records; 0.4 ms with the index conditions).
func TestClaimPlan(t *testing.T) {
	pool, s := staleBacklog(t, 2000)
	lines := explain(t, pool, pgoutbox.ClaimSQL(s), "d", 2100)
	plan := strings.Join(lines, "\n")
	for _, bad := range []string{"Seq Scan", "Join Filter"} {
		if strings.Contains(plan, bad) {
			t.Errorf("the claim's plan has %q:\n%s", bad, plan)
		}
	}
	for _, want := range []string{"key_hash = o.key_hash) AND (seq < o.seq))", "(due_at <= statement_timestamp())"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, "Index Cond:") && strings.Contains(l, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no index condition %q in the claim's plan:\n%s", want, plan)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("claim of 2100 (2000 heads, 100 followers) over 3000 pending records, statistics stale:\n%s", plan)
}

// TestOutcomePlan: the statements that store a batch's outcome find its
// records by Seq, not through the pending indexes, also on a table whose
// statistics are stale. Reading a pending index instead (observed: a bitmap
// scan of every pending record, then a filter on the Seqs) costs each
// outcome the whole backlog, and a drain of the backlog its square. (The
// retry's statement reads the key index for the later records of each
// retried key, which it must.)
func TestOutcomePlan(t *testing.T) {
	pool, s := staleBacklog(t, 3000)
	rows, err := pool.Query(testenv.Context(t, 10*time.Second), "SELECT seq FROM "+s.Table()+" ORDER BY seq LIMIT 500")
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for name, stmt := range pgoutbox.OutcomeSQL(s, seqs) {
		lines := explain(t, pool, stmt[0].(string), stmt[1:]...)
		plan := strings.Join(lines, "\n")
		bad := []string{"_due_idx", "_key_idx"}
		if name == "retry" {
			bad = bad[:1]
		}
		for _, b := range bad {
			if strings.Contains(plan, b) {
				t.Errorf("%s: the plan reads %q:\n%s", name, b, plan)
			}
		}
		// EXPLAIN ANALYZE ran the statement: it found every record.
		if want := "rows=500 loops=1"; !strings.Contains(plan, want) {
			t.Errorf("%s: no node with %q in the plan:\n%s", name, want, plan)
		}
	}
}

// staleBacklog returns a store on a new table holding 3000 pending
// records of destination "d" over the given number of keys, which no
// ANALYZE has seen: the statistics say the table is empty.
func staleBacklog(t *testing.T, keys int) (*pgxpool.Pool, *pgoutbox.Store) {
	t.Helper()
	pool := newPool(t)
	s := newStore(t, pool)
	var msgs []publisher.Message
	for i := range 3000 {
		msgs = append(msgs, publisher.Message{Type: "t", Key: []any{fmt.Sprint(i % keys)}, Body: []byte(fmt.Sprint(i))})
	}
	enqueue(t, pool, newPublisher(t, s, "d"), msgs...)
	return pool, s
}

// explain returns the lines of EXPLAIN ANALYZE of sql with args, run in a
// transaction that is rolled back.
func explain(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) []string {
	t.Helper()
	ctx := testenv.Context(t, 60*time.Second)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
