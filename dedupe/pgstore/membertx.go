package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// memberTx is the transaction a ProcessBatch member's fn finds in its
// context: the group's, each of whose methods first sets the member's
// savepoint if the member has not set it yet (group.use). Once the
// savepoint is set, the methods are the group transaction's own; so are
// the Conn, nested transaction and large objects they return.
type memberTx struct {
	g *group
	i int // the member
}

var _ pgx.Tx = (*memberTx)(nil)

// use sets the member's savepoint if it is the first use.
func (t *memberTx) use() error { return t.g.use(t.i) }

func (t *memberTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.use(); err != nil {
		return nil, err
	}
	return t.g.tx.Begin(ctx)
}

// Commit commits the whole group's transaction, as the transaction itself
// would; the group then fails (see group.run).
func (t *memberTx) Commit(ctx context.Context) error {
	if err := t.use(); err != nil {
		return err
	}
	t.g.ended = true
	return t.g.tx.Commit(ctx)
}

// Rollback rolls back the whole group's transaction, as the transaction
// itself would; the group then fails. Nothing needs to be set before.
func (t *memberTx) Rollback(ctx context.Context) error {
	t.g.ended = true
	return t.g.tx.Rollback(ctx)
}

func (t *memberTx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if err := t.use(); err != nil {
		return 0, err
	}
	return t.g.tx.CopyFrom(ctx, tableName, columnNames, rowSrc)
}

func (t *memberTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.use(); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return t.g.tx.SendBatch(ctx, b)
}

// LargeObjects and Conn cannot return an error: when the savepoint cannot
// be set, the group fails after fn returns.
func (t *memberTx) LargeObjects() pgx.LargeObjects {
	_ = t.use()
	return t.g.tx.LargeObjects()
}

func (t *memberTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.use(); err != nil {
		return nil, err
	}
	return t.g.tx.Prepare(ctx, name, sql)
}

func (t *memberTx) Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error) {
	if err := t.use(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.g.tx.Exec(ctx, sql, arguments...)
}

func (t *memberTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.use(); err != nil {
		return &failedRows{conn: t.g.tx.Conn(), err: err}, err
	}
	return t.g.tx.Query(ctx, sql, args...)
}

func (t *memberTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.use(); err != nil {
		return &failedRows{conn: t.g.tx.Conn(), err: err}
	}
	return t.g.tx.QueryRow(ctx, sql, args...)
}

func (t *memberTx) Conn() *pgx.Conn {
	_ = t.use()
	return t.g.tx.Conn()
}

// failedRows are the rows (and the row) of a query that was not sent: they
// report err, as pgx's own rows of a failed query do.
type failedRows struct {
	conn *pgx.Conn
	err  error
}

func (r *failedRows) Close()                                       {}
func (r *failedRows) Err() error                                   { return r.err }
func (r *failedRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r *failedRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r *failedRows) Next() bool                                   { return false }
func (r *failedRows) Scan(...any) error                            { return r.err }
func (r *failedRows) Values() ([]any, error)                       { return nil, r.err }
func (r *failedRows) RawValues() [][]byte                          { return nil }
func (r *failedRows) Conn() *pgx.Conn                              { return r.conn }
func (r *failedRows) TypeMap() *pgtype.Map                         { return r.conn.TypeMap() }
