package pgoutbox_test

import (
	"context"
	"github.com/google/uuid"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

var gen = forge.MustNew("outbox.test.uuidforge")

// newPool connects to the test database.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 20 // claims hold a connection each; tests check from another
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newStore returns a store on a migrated table of its own, dropped when
// the test ends.
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...pgoutbox.Option) *pgoutbox.Store {
	t.Helper()
	table := testenv.Name(t, "ob")
	s, err := pgoutbox.New(pool, append([]pgoutbox.Option{pgoutbox.WithTable(table)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		testenv.DropTables(t, s.Table())
	})
	return s
}

// newPublisher returns a publisher for destination on s.
func newPublisher(t testing.TB, s *pgoutbox.Store, destination string, opts ...publisher.Option) *pgoutbox.Publisher {
	t.Helper()
	p, err := pgoutbox.NewPublisher(s, destination, gen, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enqueue stores msgs for p in a transaction of their own.
func enqueue(t testing.TB, pool *pgxpool.Pool, p *pgoutbox.Publisher, msgs ...publisher.Message) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return p.PublishBatch(pgoutbox.NewContext(ctx, tx), msgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// count returns the number of rows of s in state ("" for all).
func count(t testing.TB, pool *pgxpool.Pool, s *pgoutbox.Store, state outbox.State) int {
	t.Helper()
	var n int
	err := pool.QueryRow(testenv.Context(t, 10*time.Second),
		"SELECT count(*) FROM "+s.Table()+" WHERE $1 = '' OR state = $1", string(state)).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// claim claims up to limit records of destination and fails on error.
func claim(t testing.TB, s *pgoutbox.Store, destination string, limit int) outbox.Batch {
	t.Helper()
	b, err := s.Claim(testenv.Context(t, 10*time.Second), destination, limit)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// finish finishes b with o and fails on error.
func finish(t testing.TB, b outbox.Batch, o outbox.Outcome) {
	t.Helper()
	if err := b.Finish(testenv.Context(t, 10*time.Second), o); err != nil {
		t.Fatal(err)
	}
}

// types returns the Type of each record.
func types(recs []outbox.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Type
	}
	return out
}

// seqs returns the Seq of each record.
func seqs(recs []outbox.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

// msg is a message of type typ with a single-string key (none when key is
// "") and a body naming both.
func msg(typ, key string) publisher.Message {
	m := publisher.Message{Type: typ, Body: []byte(typ + "/" + key)}
	if key != "" {
		m.Key = []any{key}
	}
	return m
}

// readFile returns the content of a file of this package.
func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// statementCounter counts the statements that contain match.
type statementCounter struct {
	n     *atomic.Int64
	match string
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, c.match) {
		c.n.Add(1)
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// newTracedPool connects to the test database with tracer.
func newTracedPool(t testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// idOf returns the ID m gets when published without a parent.
func idOf(t testing.TB, m publisher.Message) uuid.UUID {
	t.Helper()
	l, err := publisher.IDs(context.Background(), gen, &m)
	if err != nil {
		t.Fatal(err)
	}
	return l.MessageID
}
