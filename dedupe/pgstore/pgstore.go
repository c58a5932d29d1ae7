package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/internal/pgname"
)

// DefaultTable is the table used unless [WithTable] says otherwise.
const DefaultTable = "uuidforge_dedupe"

// DefaultCleanupBatch is the number of rows [Store.Cleanup] deletes per
// statement when given a limit of 0, and the janitor's batch size.
const DefaultCleanupBatch = 1000

// claimAttempts bounds the retries of a claim that raced a concurrent first
// insert of the same key (see Store.Claim).
const claimAttempts = 5

// releaseTimeout bounds the Release that Process sends after a failure,
// which runs even when the caller's context is done.
const releaseTimeout = 5 * time.Second

var (
	_ dedupe.BatchStore    = (*Store)(nil)
	_ dedupe.BatchInbox    = (*Store)(nil)
	_ dedupe.DefaultLeaser = (*Store)(nil)
)

// Option configures a [Store]; pass options to [New].
type Option func(*config) error

type config struct {
	table         []string // optional schema, then name
	lease         time.Duration
	retention     time.Duration
	janitorEvery  time.Duration
	janitorErrors func(error)
}

// WithTable sets the table, "name" or "schema.name", each part a plain
// identifier of at most 63 bytes (letters, digits and underscores, not
// starting with a digit). Default [DefaultTable]. The table's sequence and
// index are named after it (see [DDL]).
func WithTable(name string) Option {
	return func(c *config) error {
		parts, err := pgname.ParseTable(name)
		if err != nil {
			return fmt.Errorf("pgstore: WithTable(%q): %w", name, err)
		}
		c.table = parts
		return nil
	}
}

// WithDefaultLease sets the lease used when Claim is given 0; d must be
// positive. Default [dedupe.DefaultLease].
func WithDefaultLease(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("pgstore: WithDefaultLease(%v): %w", d, dedupe.ErrInvalidDuration)
		}
		c.lease = d
		return nil
	}
}

// WithDefaultRetention sets the retention used when Complete is given 0.
// Default [dedupe.DefaultRetention] (24 hours); [dedupe.Forever] keeps every
// completed key until it is deleted by hand.
func WithDefaultRetention(d time.Duration) Option {
	return func(c *config) error {
		if d != dedupe.Forever && d <= 0 {
			return fmt.Errorf("pgstore: WithDefaultRetention(%v): %w", d, dedupe.ErrInvalidDuration)
		}
		c.retention = d
		return nil
	}
}

// WithJanitor starts a goroutine that calls [Store.Cleanup] every interval
// until [Store.Close], passing any error to onError, which runs on the
// janitor's goroutine (nil: errors are dropped; the next run tries again). Default: no janitor; call Cleanup
// yourself, or let rows accumulate. Several processes may run janitors on
// one table: their deletes skip each other's rows.
func WithJanitor(every time.Duration, onError func(error)) Option {
	return func(c *config) error {
		if every <= 0 {
			return fmt.Errorf("pgstore: WithJanitor(%v): %w", every, dedupe.ErrInvalidDuration)
		}
		c.janitorEvery, c.janitorErrors = every, onError
		return nil
	}
}

// Store is a [dedupe.Store] and [dedupe.Inbox] kept in one PostgreSQL table.
// It is safe for concurrent use by multiple goroutines and by many processes
// sharing the table.
type Store struct {
	pool   *pgxpool.Pool
	cfg    config
	closed atomic.Bool

	stopJanitor context.CancelFunc
	janitor     sync.WaitGroup
	closeOnce   sync.Once

	names                                    names
	ddl                                      string
	lockKey                                  int64
	claimSQL, completeSQL, releaseSQL, gcSQL string

	claimBatchSQL, completeBatchSQL, releaseBatchSQL string
}

// New returns a store that keeps its records in pool's database. The pool
// stays the caller's: [Store.Close] does not close it. New does no I/O: the
// table must exist before the first call — run [Store.Migrate] once, or
// create it with your migration tool from [DDL]. It fails only on a nil pool
// or an invalid option (nil options are ignored).
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: nil pool")
	}
	s := &Store{pool: pool, cfg: config{
		table:     []string{DefaultTable},
		lease:     dedupe.DefaultLease,
		retention: dedupe.DefaultRetention,
	}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s.cfg); err != nil {
			return nil, err
		}
	}
	s.prepare()
	if s.cfg.janitorEvery > 0 {
		jctx, cancel := context.WithCancel(context.Background())
		s.stopJanitor = cancel
		s.janitor.Add(1)
		go s.runJanitor(jctx)
	}
	return s, nil
}

type names struct{ table, seq, seqLit, indexBare string }

func tableNames(parts []string) names {
	name := parts[len(parts)-1]
	qual := func(n string) pgx.Identifier {
		return append(append(pgx.Identifier{}, parts[:len(parts)-1]...), n)
	}
	seq := qual(pgname.Aux(name, "token_seq")).Sanitize()
	return names{
		table:     pgx.Identifier(parts).Sanitize(),
		seq:       seq,
		seqLit:    "'" + strings.ReplaceAll(seq, "'", "''") + "'",
		indexBare: pgx.Identifier{pgname.Aux(name, "expires_idx")}.Sanitize(),
	}
}

// DDL returns the statements that create table (as accepted by [WithTable];
// "" means [DefaultTable]) with its token sequence and expiry index. For the
// default table they are:
//
//	CREATE SEQUENCE IF NOT EXISTS "uuidforge_dedupe_token_seq";
//	CREATE TABLE IF NOT EXISTS "uuidforge_dedupe" (
//		scope      text        NOT NULL,
//		id         uuid        NOT NULL,
//		state      text        NOT NULL CHECK (state IN ('leased', 'done', 'released')),
//		token      bigint      NOT NULL,
//		expires_at timestamptz,
//		PRIMARY KEY (scope, id)
//	);
//	ALTER SEQUENCE "uuidforge_dedupe_token_seq" OWNED BY "uuidforge_dedupe".token;
//	CREATE INDEX IF NOT EXISTS "uuidforge_dedupe_expires_idx"
//		ON "uuidforge_dedupe" (expires_at) WHERE expires_at IS NOT NULL;
//
// expires_at is the lease end of a leased row, the retention end of a done
// row (NULL: kept forever) and the release time of a released row. Tokens
// come from the sequence, so they grow across deletions of a key's row;
// dropping the table drops the sequence and the index with it.
func DDL(table string) (string, error) {
	if table == "" {
		table = DefaultTable
	}
	parts, err := pgname.ParseTable(table)
	if err != nil {
		return "", fmt.Errorf("pgstore: %w", err)
	}
	return ddl(tableNames(parts)), nil
}

func ddl(n names) string {
	return `CREATE SEQUENCE IF NOT EXISTS ` + n.seq + `;
CREATE TABLE IF NOT EXISTS ` + n.table + ` (
	scope      text        NOT NULL,
	id         uuid        NOT NULL,
	state      text        NOT NULL CHECK (state IN ('leased', 'done', 'released')),
	token      bigint      NOT NULL,
	expires_at timestamptz,
	PRIMARY KEY (scope, id)
);
ALTER SEQUENCE ` + n.seq + ` OWNED BY ` + n.table + `.token;
CREATE INDEX IF NOT EXISTS ` + n.indexBare + `
	ON ` + n.table + ` (expires_at) WHERE expires_at IS NOT NULL;
`
}

func (s *Store) prepare() {
	n := tableNames(s.cfg.table)
	s.names = n
	s.ddl = ddl(n)
	h := fnv.New64a()
	h.Write([]byte("uuidforge/dedupe/pgstore migrate " + n.table))
	s.lockKey = int64(h.Sum64())

	// One statement: the INSERT takes the key when it has no row or its row
	// is claimable; otherwise the second SELECT answers from the row as this
	// statement's snapshot sees it, trusting only a row that is not claimable
	// there (a done row within retention cannot change until it expires; a
	// live lease may have completed since, and in flight is the safe answer
	// then). Status 0 — no row in the snapshot because a concurrent claim
	// inserted it after the snapshot was taken, or a row claimable in the
	// snapshot but taken since — makes Claim run the statement again.
	s.claimSQL = `WITH ins AS (
	INSERT INTO ` + n.table + ` AS d (scope, id, state, token, expires_at)
	VALUES ($1, $2, 'leased', nextval(` + n.seqLit + `), clock_timestamp() + $3::bigint * interval '1 microsecond')
	ON CONFLICT (scope, id) DO UPDATE
		SET state = 'leased', token = excluded.token, expires_at = excluded.expires_at
		WHERE d.state = 'released' OR d.expires_at <= clock_timestamp()
	RETURNING d.token, d.expires_at
)
SELECT 1, token, expires_at FROM ins
UNION ALL
SELECT CASE
		WHEN state = 'done' AND (expires_at IS NULL OR expires_at > clock_timestamp()) THEN 2
		WHEN state = 'leased' AND expires_at > clock_timestamp() THEN 3
		ELSE 0
	END, 0, expires_at
FROM ` + n.table + `
WHERE scope = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM ins)`

	s.completeSQL = `UPDATE ` + n.table + ` SET state = 'done',
	expires_at = CASE WHEN $4::bigint < 0 THEN NULL ELSE clock_timestamp() + $4::bigint * interval '1 microsecond' END
WHERE scope = $1 AND id = $2 AND token = $3 AND state = 'leased'`

	s.releaseSQL = `UPDATE ` + n.table + ` SET state = 'released', expires_at = clock_timestamp()
WHERE scope = $1 AND id = $2 AND token = $3 AND state = 'leased'`

	// The batch statements are the single-key ones over unnest()ed arrays,
	// one row per distinct key (see ClaimBatch). The claim inserts the keys
	// in the arrays' order, which ClaimBatch sorts, so that concurrent
	// batches lock rows in one order and cannot deadlock each other; the
	// second SELECT reads each row not taken from the statement's snapshot,
	// as the single claim does.
	s.claimBatchSQL = `WITH k AS (
	SELECT * FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS k(scope, id, ord)
), ins AS (
	INSERT INTO ` + n.table + ` AS d (scope, id, state, token, expires_at)
	SELECT scope, id, 'leased', nextval(` + n.seqLit + `), clock_timestamp() + $3::bigint * interval '1 microsecond'
	FROM k ORDER BY ord
	ON CONFLICT (scope, id) DO UPDATE
		SET state = 'leased', token = excluded.token, expires_at = excluded.expires_at
		WHERE d.state = 'released' OR d.expires_at <= clock_timestamp()
	RETURNING d.scope, d.id, d.token, d.expires_at
)
SELECT k.ord,
	CASE
		WHEN ins.id IS NOT NULL THEN 1
		WHEN cur.state = 'done' AND (cur.expires_at IS NULL OR cur.expires_at > clock_timestamp()) THEN 2
		WHEN cur.state = 'leased' AND cur.expires_at > clock_timestamp() THEN 3
		ELSE 0
	END,
	coalesce(ins.token, 0),
	CASE WHEN ins.id IS NOT NULL THEN ins.expires_at ELSE cur.expires_at END
FROM k
LEFT JOIN ins ON ins.scope = k.scope AND ins.id = k.id
LEFT JOIN ` + n.table + ` AS cur ON ins.id IS NULL AND cur.scope = k.scope AND cur.id = k.id`

	s.completeBatchSQL = `UPDATE ` + n.table + ` AS d SET state = 'done',
	expires_at = CASE WHEN $4::bigint < 0 THEN NULL ELSE clock_timestamp() + $4::bigint * interval '1 microsecond' END
FROM unnest($1::text[], $2::uuid[], $3::bigint[]) WITH ORDINALITY AS u(scope, id, token, ord)
WHERE d.scope = u.scope AND d.id = u.id AND d.token = u.token AND d.state = 'leased'
RETURNING u.ord`

	s.releaseBatchSQL = `UPDATE ` + n.table + ` AS d SET state = 'released', expires_at = clock_timestamp()
FROM unnest($1::text[], $2::uuid[], $3::bigint[]) WITH ORDINALITY AS u(scope, id, token, ord)
WHERE d.scope = u.scope AND d.id = u.id AND d.token = u.token AND d.state = 'leased'
RETURNING u.ord`

	// SKIP LOCKED: rows a claim or an open inbox transaction holds are left
	// for the next run, so cleanup never waits for them. The DELETE's own
	// condition is checked again on the row's latest version, so a row
	// claimed again since the SELECT is not deleted.
	s.gcSQL = `WITH doomed AS (
	SELECT scope, id FROM ` + n.table + `
	WHERE expires_at <= clock_timestamp()
	ORDER BY expires_at
	LIMIT $1
	FOR UPDATE SKIP LOCKED
)
DELETE FROM ` + n.table + ` AS d USING doomed
WHERE d.scope = doomed.scope AND d.id = doomed.id AND d.expires_at <= clock_timestamp()`
}

// DDL returns the statements [Store.Migrate] runs for this store's table.
func (s *Store) DDL() string { return s.ddl }

// Table returns the store's table name, quoted for use in SQL.
func (s *Store) Table() string { return s.names.table }

// Migrate creates the store's sequence, table and index if they do not
// exist. It is idempotent, and safe when several processes migrate at once:
// it runs in one transaction holding an advisory lock derived from the table
// name.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.ddl)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: migrate %s: %w", pgx.Identifier(s.cfg.table).Sanitize(), err)
	}
	return nil
}

// DefaultLease returns the lease Claim uses when given 0 ([WithDefaultLease]).
func (s *Store) DefaultLease() time.Duration { return s.cfg.lease }

// Close stops the janitor, if any, and waits for it; later calls return an
// error wrapping [dedupe.ErrClosed]. It does not close the pool. It is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.stopJanitor != nil {
			s.stopJanitor()
		}
		s.janitor.Wait()
	})
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return dedupe.ErrClosed
	}
	return ctx.Err()
}

// Claim implements [dedupe.Store.Claim] with one statement (one round trip).
// Only when the key's row was first inserted by a concurrent claim that
// committed after this statement began (or a claimable row was taken by one)
// does the statement not see a trustworthy row; Claim then runs it again, up
// to a few times. Lease ends are taken from the database clock.
func (s *Store) Claim(ctx context.Context, key dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Claim{}, fmt.Errorf("pgstore: claim %s: %w", key, err)
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.cfg.lease)
	if err != nil {
		return dedupe.Claim{}, fmt.Errorf("pgstore: claim %s: %w", key, err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Claim{}, fmt.Errorf("pgstore: claim %s: %w", key, err)
	}
	for range claimAttempts {
		var (
			status  int32
			token   int64
			expires *time.Time
		)
		err := s.pool.QueryRow(ctx, s.claimSQL, key.Scope, [16]byte(key.ID), pgname.Micros(lease)).Scan(&status, &token, &expires)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return dedupe.Claim{}, fmt.Errorf("pgstore: claim %s: %w", key, err)
		}
		c := dedupe.Claim{Key: key}
		if expires != nil {
			c.Until = *expires
		}
		switch status {
		case 1:
			c.Status, c.Token = dedupe.Acquired, uint64(token)
		case 2:
			c.Status = dedupe.Duplicate
		case 3:
			c.Status = dedupe.InFlight
		default:
			continue
		}
		return c, nil
	}
	return dedupe.Claim{}, fmt.Errorf("pgstore: claim %s: the key's row kept changing under %d attempts", key, claimAttempts)
}

func (s *Store) finishArgs(op string, c dedupe.Claim) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("pgstore: %s %s: %w", op, c.Key, err)
	}
	if c.Token > math.MaxInt64 {
		return fmt.Errorf("pgstore: %s %s (token %d): %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
	}
	return nil
}

func (s *Store) retentionArg(c dedupe.Claim, retention time.Duration) (int64, error) {
	ret, err := retentionMicros(retention, s.cfg.retention)
	if err != nil {
		return 0, fmt.Errorf("pgstore: complete %s: %w", c.Key, err)
	}
	return ret, nil
}

// retentionMicros is the retention argument of the completion statements:
// microseconds, or -1 for [dedupe.Forever].
func retentionMicros(retention, def time.Duration) (int64, error) {
	retention, err := dedupe.RetentionOrDefault(retention, def)
	if err != nil {
		return 0, err
	}
	if retention == dedupe.Forever {
		return -1, nil
	}
	return pgname.Micros(retention), nil
}

// Complete implements [dedupe.Store.Complete] with one UPDATE that checks
// the token: no row updated means [dedupe.ErrLeaseLost]. Retention is
// measured by the database clock; [dedupe.Forever] stores a NULL expiry.
func (s *Store) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	if err := s.finishArgs("complete", c); err != nil {
		return err
	}
	ret, err := s.retentionArg(c, retention)
	if err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("pgstore: complete %s: %w", c.Key, err)
	}
	tag, err := s.pool.Exec(ctx, s.completeSQL, c.Key.Scope, [16]byte(c.Key.ID), int64(c.Token), ret)
	return affected("complete", c, tag.RowsAffected(), err)
}

// CompleteTx completes c inside tx, the caller's own transaction, so that
// the completion commits or rolls back with the caller's writes. On
// [dedupe.ErrLeaseLost] (or any error) the caller must roll tx back: the
// lease is someone else's now and its writes must not commit. tx's
// connection must belong to this store's database.
func (s *Store) CompleteTx(ctx context.Context, tx pgx.Tx, c dedupe.Claim, retention time.Duration) error {
	if tx == nil {
		return errors.New("pgstore: complete: nil transaction")
	}
	if err := s.finishArgs("complete", c); err != nil {
		return err
	}
	ret, err := s.retentionArg(c, retention)
	if err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("pgstore: complete %s: %w", c.Key, err)
	}
	tag, err := tx.Exec(ctx, s.completeSQL, c.Key.Scope, [16]byte(c.Key.ID), int64(c.Token), ret)
	return affected("complete", c, tag.RowsAffected(), err)
}

// Release implements [dedupe.Store.Release] with one UPDATE that checks the
// token. The row stays, marked released, so the next claim takes it at once
// and cleanup removes it later.
func (s *Store) Release(ctx context.Context, c dedupe.Claim) error {
	if err := s.finishArgs("release", c); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("pgstore: release %s: %w", c.Key, err)
	}
	tag, err := s.pool.Exec(ctx, s.releaseSQL, c.Key.Scope, [16]byte(c.Key.ID), int64(c.Token))
	return affected("release", c, tag.RowsAffected(), err)
}

func affected(op string, c dedupe.Claim, n int64, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("pgstore: %s %s: %w", op, c.Key, err)
	case n == 0:
		return fmt.Errorf("pgstore: %s %s (token %d): %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
	}
	return nil
}

// Cleanup deletes rows whose expiry has passed — completions past their
// retention, released keys, leases that ended — in statements of at most
// limit rows (0: [DefaultCleanupBatch]) until fewer than limit are left or
// ctx is done, and returns how many it deleted. It skips rows that other
// transactions hold, so it never waits for a claim and claims never wait for
// more than one small batch. A holder whose expired lease was deleted gets
// [dedupe.ErrLeaseLost] from Complete, as if someone had claimed the key.
func (s *Store) Cleanup(ctx context.Context, limit int) (int64, error) {
	if limit < 0 {
		return 0, fmt.Errorf("pgstore: cleanup: negative limit %d", limit)
	}
	if limit == 0 {
		limit = DefaultCleanupBatch
	}
	var total int64
	for {
		if err := s.check(ctx); err != nil {
			return total, fmt.Errorf("pgstore: cleanup: %w", err)
		}
		tag, err := s.pool.Exec(ctx, s.gcSQL, limit)
		if err != nil {
			return total, fmt.Errorf("pgstore: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(limit) {
			return total, nil
		}
	}
}

func (s *Store) runJanitor(ctx context.Context) {
	defer s.janitor.Done()
	pgname.Janitor(ctx, s.cfg.janitorEvery, func(ctx context.Context) error {
		_, err := s.Cleanup(ctx, DefaultCleanupBatch)
		return err
	}, s.cfg.janitorErrors)
}

type txKey struct{}

// TxFromContext returns the transaction [Store.Process] runs its handler in.
// The handler does its writes through it so they commit with the
// completion. In [Store.ProcessBatch], it is the group's transaction as
// seen by one message: its first use (any method) sets the message's
// savepoint, and it is the message's only while its handler runs.
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	return tx, ok
}

// Process implements [dedupe.Inbox]: it claims key; if acquired, it begins a
// transaction, calls fn with a context carrying it ([TxFromContext]),
// completes the claim inside the transaction ([Store.CompleteTx]) and
// commits, so fn's writes and the completion commit together or not at all.
// If fn fails or panics, the lease was lost (an error wrapping
// [dedupe.ErrLeaseLost]) or the commit fails, the transaction rolls back and
// the claim is released (even if ctx is done), so the redelivery can claim
// the key at once; the error is returned with the Acquired claim.
// Duplicate and in-flight keys return their claim (Until: the retention end,
// or the holder's lease end) and a nil error without calling fn.
//
// When fn returned nil but the transaction cannot commit because of what fn
// did — a deferred constraint failing at COMMIT (SQLSTATE class 23), a data
// error (class 22), a statement whose error fn ignored and that aborted the
// transaction (25P02), a serialization failure or deadlock (class 40), an
// error raised by a deferred trigger — the error wraps
// [dedupe.ErrRolledBack]: it is fn's failure, to be retried and eventually
// dead-lettered like any other. Failures of the database itself (a lost
// connection, class 08, an administrator shutdown, 57P01 to 57P03, and the
// rest of class 57, insufficient resources, class 53, system and internal
// errors, classes 58 and XX, or ctx ending) are store errors and do not wrap
// it.
//
// Cost: a claim, BEGIN, fn's statements, the completion and COMMIT — four
// round trips besides fn's.
func (s *Store) Process(ctx context.Context, key dedupe.Key, lease, retention time.Duration, fn func(ctx context.Context) error) (dedupe.Claim, error) {
	if fn == nil {
		return dedupe.Claim{}, errors.New("pgstore: process: nil handler")
	}
	if _, err := s.retentionArg(dedupe.Claim{Key: key}, retention); err != nil {
		return dedupe.Claim{}, err
	}
	c, err := s.Claim(ctx, key, lease)
	if err != nil || !c.Acquired() {
		return c, err
	}
	if err := s.processAcquired(ctx, c, retention, fn); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		// After a lost lease or a commit that did in fact succeed, Release
		// finds no lease of ours: nothing to undo.
		if rerr := s.Release(rctx, c); rerr != nil && !errors.Is(rerr, dedupe.ErrLeaseLost) {
			return c, withRelease(err, rerr)
		}
		return c, err
	}
	return c, nil
}

// withRelease adds the failure of the release that followed err to it.
func withRelease(err, rerr error) error {
	return fmt.Errorf("%w (and the release failed: %w)", err, unprefixed{rerr})
}

// unprefixed shows an error of this package without its "pgstore: " prefix,
// for wrapping it inside another of this package's errors.
type unprefixed struct{ err error }

func (u unprefixed) Error() string { return strings.TrimPrefix(u.err.Error(), "pgstore: ") }
func (u unprefixed) Unwrap() error { return u.err }

func (s *Store) processAcquired(ctx context.Context, c dedupe.Claim, retention time.Duration, fn func(ctx context.Context) error) (err error) {
	ret, err := s.retentionArg(c, retention)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: process %s: begin: %w", c.Key, err)
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			_ = tx.Rollback(rctx)
		}
	}()
	if err := s.runHandler(ctx, tx, c, fn); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, s.completeSQL, c.Key.Scope, [16]byte(c.Key.ID), int64(c.Token), ret)
	switch {
	case err != nil && statementRolledBack(ctx, err):
		return fmt.Errorf("pgstore: process %s: complete: %w: %w", c.Key, dedupe.ErrRolledBack, err)
	case err != nil:
		return fmt.Errorf("pgstore: process %s: complete: %w", c.Key, err)
	case tag.RowsAffected() == 0:
		return fmt.Errorf("pgstore: process %s: complete (token %d): %w", c.Key, c.Token, dedupe.ErrLeaseLost)
	}
	if err := tx.Commit(ctx); err != nil {
		if commitRolledBack(ctx, err) {
			return fmt.Errorf("pgstore: process %s: commit: %w: %w", c.Key, dedupe.ErrRolledBack, err)
		}
		return fmt.Errorf("pgstore: process %s: commit: %w", c.Key, err)
	}
	return nil
}

// outage reports whether err means the database could not do its work at
// all — the connection failed or was closed (no PostgreSQL error code, or
// class 08), an administrator or crash shut it down (class 57, which also
// holds query cancellations), it ran out of resources (53), a system or
// internal error (58, XX) — or ctx ended. Such errors say nothing about the
// transaction's data.
func outage(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true // network errors, a closed pool, pgx's own failures
	}
	switch pe.Code[:min(2, len(pe.Code))] {
	case "08", "53", "57", "58", "XX":
		return true
	}
	return false
}

// commitRolledBack reports whether err, returned by the COMMIT of an inbox
// transaction, means the transaction failed because of what it did: every
// error the server raises at COMMIT except an outage (a deferred
// constraint, a deferred trigger's error, a serialization failure), and
// pgx's report that the server rolled an aborted transaction back instead
// of committing it.
func commitRolledBack(ctx context.Context, err error) bool {
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return true
	}
	return !outage(ctx, err)
}

// statementRolledBack reports whether err, returned by one of the store's
// own statements inside an inbox transaction, was caused by the
// transaction's earlier work rather than by the statement: the transaction
// was aborted (25P02), or it hit a serialization failure or deadlock
// (class 40).
func statementRolledBack(ctx context.Context, err error) bool {
	var pe *pgconn.PgError
	if outage(ctx, err) || !errors.As(err, &pe) {
		return false
	}
	return pe.Code == pgerrcode25P02 || strings.HasPrefix(pe.Code, "40")
}

// pgerrcode25P02 is in_failed_sql_transaction: "current transaction is
// aborted, commands ignored until end of transaction block".
const pgerrcode25P02 = "25P02"

// runHandler calls fn, turning a panic into a rolled-back, released claim
// before it continues up the stack.
func (s *Store) runHandler(ctx context.Context, tx pgx.Tx, c dedupe.Claim, fn func(ctx context.Context) error) error {
	panicked := true
	defer func() {
		if panicked {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			_ = tx.Rollback(rctx)
			_ = s.Release(rctx, c)
		}
	}()
	err := fn(context.WithValue(ctx, txKey{}, tx))
	panicked = false
	return err
}
