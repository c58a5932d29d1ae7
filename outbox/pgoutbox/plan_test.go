package pgoutbox_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

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
	pool := newPool(t)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 60*time.Second)
	p := newPublisher(t, s, "d")
	var msgs []publisher.Message
	for i := range 3000 {
		msgs = append(msgs, publisher.Message{Type: "t", Key: []any{fmt.Sprint(i % 2000)}, Body: []byte(fmt.Sprint(i))})
	}
	enqueue(t, pool, p, msgs...) // no ANALYZE since: the statistics say the table is empty
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+pgoutbox.ClaimSQL(s), "d", 2100)
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
