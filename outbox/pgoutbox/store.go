package pgoutbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/pgname"
	"github.com/uuidforge/uuidforge/outbox"
)

// DefaultTable is the table used unless [WithTable] says otherwise.
const DefaultTable = "uuidforge_outbox"

// DefaultRetention is how long a dispatched record is kept before
// [Store.Cleanup] deletes it: the window in which enqueueing the same
// message again is recognised and stored once.
const DefaultRetention = 24 * time.Hour

// DefaultCleanupBatch is the number of rows [Store.Cleanup] deletes per
// statement when given a limit of 0, and the janitor's batch size.
const DefaultCleanupBatch = 1000

var _ outbox.Store = (*Store)(nil)

// Errors callers branch on.
var (
	// ErrNoTransaction is returned by a [Publisher] called without a
	// transaction in its context (see [NewContext]) and without
	// [WithOwnTransaction].
	ErrNoTransaction = errors.New("pgoutbox: no transaction in the context (see pgoutbox.NewContext)")
	// ErrNotFound is returned for a record that does not exist, or is not
	// in the state the call needs (a redrive of a record that is not dead).
	ErrNotFound = errors.New("pgoutbox: no such record")
	// ErrClosed is returned by a Store used after Close.
	ErrClosed = errors.New("pgoutbox: store closed")
)

// Option configures a [Store]; pass options to [New].
type Option func(*config) error

type config struct {
	table         []string // optional schema, then name
	retention     time.Duration
	notify        bool
	janitorEvery  time.Duration
	janitorErrors func(error)
}

// WithTable sets the table, "name" or "schema.name", each part a plain
// identifier of at most 63 bytes (letters, digits and underscores, not
// starting with a digit). Default [DefaultTable]. The table's indexes and
// notification channel are named after it (see [DDL]).
func WithTable(name string) Option {
	return func(c *config) error {
		parts, err := pgname.ParseTable(name)
		if err != nil {
			return errorf("WithTable(%q): %w", name, err)
		}
		c.table = parts
		return nil
	}
}

// WithRetention sets how long a dispatched record is kept before
// [Store.Cleanup] (or the janitor) deletes it; d must be positive. Default
// [DefaultRetention]. While a record is kept, enqueueing a message with the
// same ID for the same destination again stores nothing.
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errorf("WithRetention(%v): must be positive", d)
		}
		c.retention = d
		return nil
	}
}

// WithoutNotify stops enqueues from announcing new records with
// pg_notify. Default: every enqueue that stores a record notifies the
// table's channel at commit, which wakes the relays within milliseconds.
// PostgreSQL serialises the commits of notifying transactions, which can
// limit very high enqueue rates; without notifications relays find new
// records by polling (outbox.WithPollInterval).
func WithoutNotify() Option {
	return func(c *config) error {
		c.notify = false
		return nil
	}
}

// WithJanitor starts a goroutine that calls [Store.Cleanup] every interval
// until [Store.Close], passing any error to onError, which runs on the
// janitor's goroutine (nil: errors are dropped; the next run tries again).
// Default: no janitor; call Cleanup yourself, or let dispatched rows
// accumulate. Several processes may run janitors on one table: their
// deletes skip each other's rows.
func WithJanitor(every time.Duration, onError func(error)) Option {
	return func(c *config) error {
		if every <= 0 {
			return errorf("WithJanitor(%v): must be positive", every)
		}
		c.janitorEvery, c.janitorErrors = every, onError
		return nil
	}
}

// Store is a transactional outbox kept in one PostgreSQL table: the
// [outbox.Store] a relay works on, and the table [Publisher]s enqueue into.
// It is safe for concurrent use by multiple goroutines and by many
// processes sharing the table.
type Store struct {
	pool   *pgxpool.Pool
	cfg    config
	closed atomic.Bool

	stopJanitor context.CancelFunc
	janitor     sync.WaitGroup
	closeOnce   sync.Once

	names   names
	ddl     string
	lockKey int64
	sql     statements
}

// New returns a store that keeps its records in pool's database. The pool
// stays the caller's: [Store.Close] does not close it. New does no I/O: the
// table must exist before the first call — run [Store.Migrate] once, or
// create it with your migration tool from [DDL]. It fails only on a nil pool
// or an invalid option (nil options are ignored).
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgoutbox: nil pool")
	}
	s := &Store{pool: pool, cfg: config{
		table:     []string{DefaultTable},
		retention: DefaultRetention,
		notify:    true,
	}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s.cfg); err != nil {
			return nil, err
		}
	}
	s.names = tableNames(s.cfg.table)
	s.ddl = ddl(s.names)
	h := fnv.New64a()
	h.Write([]byte("uuidforge/outbox/pgoutbox migrate " + s.names.table))
	s.lockKey = int64(h.Sum64())
	s.sql = prepare(s.names)
	if s.cfg.janitorEvery > 0 {
		jctx, cancel := context.WithCancel(context.Background())
		s.stopJanitor = cancel
		s.janitor.Add(1)
		go s.runJanitor(jctx)
	}
	return s, nil
}

type names struct {
	table                        string // quoted, possibly schema-qualified
	tableLit                     string // the same as a string literal
	unique, due, key, done, dead string // bare quoted index and constraint names
	channel                      string // the notification channel, unquoted
	channelIdent                 string // the same, quoted
}

func tableNames(parts []string) names {
	name := parts[len(parts)-1]
	quoted := pgx.Identifier(parts).Sanitize()
	bare := func(suffix string) string { return pgx.Identifier{pgname.Aux(name, suffix)}.Sanitize() }
	channel := pgname.Aux(strings.Join(parts, "_"), "notify")
	return names{
		table:        quoted,
		tableLit:     "'" + strings.ReplaceAll(quoted, "'", "''") + "'",
		unique:       bare("message_key"),
		due:          bare("due_idx"),
		key:          bare("key_idx"),
		done:         bare("done_idx"),
		dead:         bare("dead_idx"),
		channel:      channel,
		channelIdent: pgx.Identifier{channel}.Sanitize(),
	}
}

// DDL returns the statements that create table (as accepted by [WithTable];
// "" means [DefaultTable]) with its indexes. For the default table they
// are:
//
//	CREATE TABLE IF NOT EXISTS "uuidforge_outbox" (
//		seq            bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
//		destination    text        NOT NULL,
//		message_id     uuid        NOT NULL,
//		correlation_id uuid        NOT NULL,
//		causation_id   uuid,
//		type           text        NOT NULL,
//		msg_key        bytea,
//		key_hash       bigint      GENERATED ALWAYS AS (hashtextextended(encode(msg_key, 'hex'), 0)) STORED,
//		routing_key    text,
//		headers        jsonb,
//		body           bytea       NOT NULL,
//		created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
//		state          text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dispatched', 'dead')),
//		due_at         timestamptz DEFAULT clock_timestamp(),
//		attempts       integer     NOT NULL DEFAULT 0,
//		last_error     text,
//		done_at        timestamptz,
//		CHECK (state <> 'pending' OR due_at IS NOT NULL),
//		CONSTRAINT "uuidforge_outbox_message_key" UNIQUE (destination, message_id)
//	);
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_due_idx"
//		ON "uuidforge_outbox" (destination, due_at, seq) WHERE state = 'pending';
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_key_idx"
//		ON "uuidforge_outbox" (destination, key_hash, seq) WHERE state = 'pending' AND key_hash IS NOT NULL;
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_done_idx"
//		ON "uuidforge_outbox" (done_at) WHERE state = 'dispatched';
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_dead_idx"
//		ON "uuidforge_outbox" (destination, seq) WHERE state = 'dead';
//
// The package documentation describes each column. Only pending and dead
// rows are in the partial indexes the relay reads, so dispatched rows
// waiting for cleanup do not slow it down.
func DDL(table string) (string, error) {
	if table == "" {
		table = DefaultTable
	}
	parts, err := pgname.ParseTable(table)
	if err != nil {
		return "", errorf("%w", err)
	}
	return ddl(tableNames(parts)), nil
}

func ddl(n names) string {
	return `CREATE TABLE IF NOT EXISTS ` + n.table + ` (
	seq            bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	destination    text        NOT NULL,
	message_id     uuid        NOT NULL,
	correlation_id uuid        NOT NULL,
	causation_id   uuid,
	type           text        NOT NULL,
	msg_key        bytea,
	key_hash       bigint      GENERATED ALWAYS AS (hashtextextended(encode(msg_key, 'hex'), 0)) STORED,
	routing_key    text,
	headers        jsonb,
	body           bytea       NOT NULL,
	created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
	state          text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dispatched', 'dead')),
	due_at         timestamptz DEFAULT clock_timestamp(),
	attempts       integer     NOT NULL DEFAULT 0,
	last_error     text,
	done_at        timestamptz,
	CHECK (state <> 'pending' OR due_at IS NOT NULL),
	CONSTRAINT ` + n.unique + ` UNIQUE (destination, message_id)
);
CREATE INDEX IF NOT EXISTS ` + n.due + `
	ON ` + n.table + ` (destination, due_at, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS ` + n.key + `
	ON ` + n.table + ` (destination, key_hash, seq) WHERE state = 'pending' AND key_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS ` + n.done + `
	ON ` + n.table + ` (done_at) WHERE state = 'dispatched';
CREATE INDEX IF NOT EXISTS ` + n.dead + `
	ON ` + n.table + ` (destination, seq) WHERE state = 'dead';
`
}

// DDL returns the statements [Store.Migrate] runs for this store's table.
func (s *Store) DDL() string { return s.ddl }

// Table returns the store's table name, quoted for use in SQL.
func (s *Store) Table() string { return s.names.table }

// Channel returns the notification channel enqueues notify and relays
// listen on (unquoted): the table's name, schema included, with the suffix
// "_notify".
func (s *Store) Channel() string { return s.names.channel }

// Migrate creates the store's table and indexes if they do not exist. It is
// idempotent, and safe when several processes migrate at once: it runs in
// one transaction holding an advisory lock derived from the table name.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.ddl)
		return err
	})
	if err != nil {
		return errorf("migrate %s: %w", s.names.table, err)
	}
	return nil
}

// Close stops the janitor, if any, and waits for it; later calls of the
// relay's methods and of Cleanup return an error wrapping [ErrClosed]
// (publishers keep enqueueing: their writes belong to the caller's
// transaction). It does not close the pool. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// The janitor first: a cleanup in progress must not report the
		// store closed under it.
		if s.stopJanitor != nil {
			s.stopJanitor()
		}
		s.janitor.Wait()
		s.closed.Store(true)
	})
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Cleanup deletes dispatched rows older than the retention ([WithRetention])
// in statements of at most limit rows (0: [DefaultCleanupBatch]) until fewer
// than limit are left or ctx is done, and returns how many it deleted. It
// never deletes a pending or dead row, and skips rows other transactions
// hold, so it neither waits for relays nor makes them wait for more than one
// small batch.
func (s *Store) Cleanup(ctx context.Context, limit int) (int64, error) {
	if limit < 0 {
		return 0, errorf("cleanup: negative limit %d", limit)
	}
	if limit == 0 {
		limit = DefaultCleanupBatch
	}
	var total int64
	for {
		if err := s.check(ctx); err != nil {
			return total, errorf("cleanup: %w", err)
		}
		tag, err := s.pool.Exec(ctx, s.sql.cleanup, pgname.Micros(s.cfg.retention), limit)
		if err != nil {
			return total, errorf("cleanup: %w", err)
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

// errorf formats an error of this package: "pgoutbox: " followed by
// format. Errors among args keep wrapping (%w) but lose their own
// "pgoutbox: " prefix in the text, so the package name appears once.
func errorf(format string, args ...any) error {
	for i, a := range args {
		if e, ok := a.(error); ok {
			args[i] = unprefixedErr{e}
		}
	}
	return fmt.Errorf("pgoutbox: "+format, args...)
}

type unprefixedErr struct{ err error }

func (u unprefixedErr) Error() string { return strings.TrimPrefix(u.err.Error(), "pgoutbox: ") }
func (u unprefixedErr) Unwrap() error { return u.err }
