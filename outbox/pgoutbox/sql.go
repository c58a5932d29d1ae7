package pgoutbox

import (
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/uuidforge/uuidforge/outbox"
)

// statements holds the SQL of one table.
type statements struct {
	enqueue, enqueueNotify               string
	claim                                string
	dispatched, retry, dead              string
	cleanup                              string
	backlog, deadList, lookup            string
	redrive, redriveAll, maxDead, notify string
}

// recordCols are the columns scanRecord reads, in order.
const recordCols = `seq, destination, message_id, correlation_id, causation_id, type, msg_key,
	routing_key, headers, body, created_at, state, attempts, last_error, due_at, done_at`

func prepare(n names) statements {
	var st statements
	t := n.table

	// One statement per call, whatever the number of messages: the arrays
	// are unnest()ed in their order, so Seq follows it. A message whose ID
	// the destination already holds is skipped (ON CONFLICT DO NOTHING,
	// which also drops a repeat inside one call).
	insert := `INSERT INTO ` + t + ` AS o (destination, message_id, correlation_id, causation_id, type,
		msg_key, routing_key, headers, body)
	SELECT $1, u.id, u.corr, u.cause, u.type, u.key, u.rk, u.h::jsonb, u.body
	FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::bytea[])
		WITH ORDINALITY AS u(id, corr, cause, type, key, rk, h, body, ord)
	ORDER BY u.ord
	ON CONFLICT (destination, message_id) DO NOTHING`
	st.enqueue = insert
	// pg_notify inside the caller's transaction is delivered at its commit,
	// and not at all if it rolls back; PostgreSQL folds identical
	// notifications of one transaction into one.
	st.enqueueNotify = `WITH ins AS (` + insert + `
	RETURNING 1
)
SELECT pg_notify($10, $1) FROM (SELECT 1 FROM ins LIMIT 1) AS x`

	// The heads: due pending records with no pending predecessor of their
	// key, oldest due first, locked (others skip them). Then, for each
	// keyed head, the records that follow it in its key's queue, as many
	// as the batch has room for, the first follower of every head before
	// any second one. Followers need no lock: nobody else can claim them
	// while their head is pending.
	//
	// Two details keep the plan index-bound whatever the statistics say
	// (a backlog that appeared since the last ANALYZE): OFFSET 0 keeps the
	// predecessor check a correlated subplan — an index probe on
	// (destination, key_hash, seq) per candidate — instead of an anti-join
	// the planner may run against every pending record of the destination;
	// and statement_timestamp(), being stable, bounds the index scan on
	// (destination, due_at), which clock_timestamp() cannot.
	st.claim = `WITH heads AS (
	SELECT ` + prefixed("o", recordCols) + `, o.key_hash
	FROM ` + t + ` AS o
	WHERE o.destination = $1 AND o.state = 'pending' AND o.due_at <= statement_timestamp()
		AND NOT EXISTS (
			SELECT 1 FROM ` + t + ` AS p
			WHERE p.destination = $1 AND p.key_hash = o.key_hash AND p.state = 'pending' AND p.seq < o.seq
			OFFSET 0)
	ORDER BY o.due_at, o.seq
	LIMIT $2
	FOR UPDATE OF o SKIP LOCKED
), followers AS (
	SELECT f.*
	FROM heads AS h
	CROSS JOIN LATERAL (
		SELECT ` + prefixed("x", recordCols) + `, row_number() OVER (ORDER BY x.seq) AS rn
		FROM ` + t + ` AS x
		WHERE x.destination = $1 AND x.key_hash = h.key_hash AND x.state = 'pending' AND x.seq > h.seq
		ORDER BY x.seq
		LIMIT $2
	) AS f
	WHERE h.key_hash IS NOT NULL
	ORDER BY f.rn, f.seq
	LIMIT greatest($2 - (SELECT count(*) FROM heads), 0)
)
SELECT ` + recordCols + ` FROM heads
UNION ALL
SELECT ` + recordCols + ` FROM followers
ORDER BY seq`

	// The outcome's statements find their records by Seq only. "Pending"
	// is written as neither dispatched nor dead (the CHECK constraint
	// allows no other state) so that it does not match the predicate of
	// the pending indexes: on a table whose statistics are stale (a
	// backlog that appeared since the last ANALYZE) the planner would
	// otherwise read every pending record through one of them for every
	// outcome stored, making a drain quadratic in the backlog.
	pending := `o.state <> 'dispatched' AND o.state <> 'dead'`
	st.dispatched = `UPDATE ` + t + ` AS o SET state = 'dispatched', done_at = clock_timestamp(), due_at = NULL
WHERE o.seq = ANY($1::bigint[]) AND ` + pending

	// A retried record's later records wait at least as long: not needed
	// for order (a claim never takes them before it) but it keeps claims
	// from stepping over them one by one until then.
	st.retry = `WITH f AS (
	UPDATE ` + t + ` AS o SET attempts = o.attempts + 1, last_error = u.reason,
		due_at = clock_timestamp() + u.delay * interval '1 microsecond'
	FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(seq, reason, delay)
	WHERE o.seq = u.seq AND ` + pending + `
	RETURNING o.seq, o.destination, o.key_hash, o.due_at
), later AS (
	SELECT x.seq, f.due_at
	FROM f JOIN ` + t + ` AS x ON x.destination = f.destination AND x.key_hash = f.key_hash
	WHERE f.key_hash IS NOT NULL AND x.state = 'pending' AND x.seq > f.seq AND x.due_at < f.due_at
	FOR UPDATE OF x SKIP LOCKED
)
UPDATE ` + t + ` AS o SET due_at = later.due_at FROM later WHERE o.seq = later.seq`

	st.dead = `UPDATE ` + t + ` AS o SET state = 'dead', attempts = o.attempts + 1, last_error = u.reason,
	done_at = clock_timestamp(), due_at = NULL
FROM unnest($1::bigint[], $2::text[]) AS u(seq, reason)
WHERE o.seq = u.seq AND ` + pending

	// SKIP LOCKED: rows another janitor holds are left for the next run.
	st.cleanup = `DELETE FROM ` + t + ` WHERE seq IN (
	SELECT seq FROM ` + t + `
	WHERE state = 'dispatched' AND done_at <= clock_timestamp() - $1::bigint * interval '1 microsecond'
	ORDER BY done_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED
)`

	st.backlog = `SELECT destination, count(*), min(created_at),
	coalesce((extract(epoch FROM clock_timestamp() - min(created_at)) * 1000000)::bigint, 0), 0::bigint
FROM ` + t + ` WHERE state = 'pending' GROUP BY destination
UNION ALL
SELECT destination, 0, NULL, 0, count(*)
FROM ` + t + ` WHERE state = 'dead' GROUP BY destination`

	st.deadList = `SELECT ` + recordCols + ` FROM ` + t + `
WHERE state = 'dead' AND ($1 = '' OR destination = $1) AND seq > $2
ORDER BY seq
LIMIT $3`

	st.lookup = `SELECT ` + recordCols + ` FROM ` + t + ` WHERE destination = $1 AND message_id = $2`

	// A redriven record gets a new Seq from the table's own sequence: it
	// goes to the end of its key's queue, behind records enqueued since.
	reset := `state = 'pending', due_at = clock_timestamp(), attempts = 0, last_error = NULL, done_at = NULL`
	nextSeq := `nextval(pg_get_serial_sequence(` + n.tableLit + `, 'seq'))`
	st.redrive = `UPDATE ` + t + ` SET seq = ` + nextSeq + `, ` + reset + `
WHERE seq = $1 AND state = 'dead'
RETURNING seq, destination`
	// New Seqs in the order of the old ones (the ordered subquery feeds
	// nextval row by row), so the redriven records of one key keep their
	// order. Only records that were dead when the redrive began ($3), so
	// that records dying again meanwhile are not redriven in a loop.
	st.redriveAll = `WITH old AS (
	SELECT seq FROM ` + t + `
	WHERE state = 'dead' AND destination = $1 AND seq <= $3
	ORDER BY seq
	LIMIT $2
	FOR UPDATE SKIP LOCKED
), renum AS (
	SELECT o.seq AS old, ` + nextSeq + ` AS new
	FROM (SELECT seq FROM old ORDER BY seq) AS o
)
UPDATE ` + t + ` AS o SET seq = renum.new, ` + reset + `
FROM renum WHERE o.seq = renum.old`
	st.maxDead = `SELECT coalesce(max(seq), 0) FROM ` + t + ` WHERE state = 'dead' AND destination = $1`
	st.notify = `SELECT pg_notify($1, $2)`
	return st
}

// prefixed qualifies each column of cols with alias.
func prefixed(alias, cols string) string {
	var out []byte
	start := true
	for i := 0; i < len(cols); i++ {
		c := cols[i]
		if start && c != ' ' && c != '\t' && c != '\n' {
			out = append(out, alias...)
			out = append(out, '.')
			start = false
		}
		out = append(out, c)
		if c == ',' {
			start = true
		}
	}
	return string(out)
}

// scanRecord reads one row of recordCols.
func scanRecord(row pgx.CollectableRow) (outbox.Record, error) {
	var (
		r                  outbox.Record
		id, corr, cause    pgtype.UUID
		rk, lastErr, state pgtype.Text
		headers            map[string]string
		due, done          pgtype.Timestamptz
		attempts           int32
	)
	err := row.Scan(&r.Seq, &r.Destination, &id, &corr, &cause, &r.Type, &r.Key,
		&rk, &headers, &r.Body, &r.CreatedAt, &state, &attempts, &lastErr, &due, &done)
	if err != nil {
		return r, err
	}
	r.ID, r.CorrelationID = uuid.UUID(id.Bytes), uuid.UUID(corr.Bytes)
	if cause.Valid {
		r.CausationID = uuid.UUID(cause.Bytes)
	}
	r.RoutingKey, r.LastError, r.State = rk.String, lastErr.String, outbox.State(state.String)
	if len(headers) > 0 {
		r.Headers = headers
	}
	r.Attempts = int(attempts)
	r.DueAt, r.DoneAt = timeOf(due), timeOf(done)
	if r.Body == nil {
		r.Body = []byte{}
	}
	return r, nil
}

func timeOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time
}
