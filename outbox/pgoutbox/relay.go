package pgoutbox

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/pgname"
	"github.com/uuidforge/uuidforge/outbox"
)

// maxReason is the longest failure reason stored, in bytes.
const maxReason = 4000

// Claim implements [outbox.Store.Claim] with one statement in a transaction
// that stays open until [outbox.Batch.Finish]: it locks the heads — due
// pending records of destination that have no pending record of their key
// with a smaller Seq — with FOR UPDATE SKIP LOCKED, oldest due first, and
// adds the records that follow each keyed head in its key's queue while the
// batch has room. Relays therefore never wait for each other, and a relay
// that dies releases its records at once: its connection closes and the
// transaction rolls back. BEGIN and the claim go in one round trip; the
// transaction holds one connection of the pool until Finish.
func (s *Store) Claim(ctx context.Context, destination string, limit int) (outbox.Batch, error) {
	if limit < 1 {
		return nil, errorf("claim: limit %d < 1", limit)
	}
	if err := s.check(ctx); err != nil {
		return nil, errorf("claim: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, errorf("claim: %w", err)
	}
	var q pgx.Batch
	q.Queue("BEGIN")
	q.Queue(s.sql.claim, destination, limit)
	br := conn.SendBatch(ctx, &q)
	_, err = br.Exec()
	var recs []outbox.Record
	if err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			recs, err = pgx.CollectRows(rows, scanRecord)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil || len(recs) == 0 {
		end(ctx, conn, "ROLLBACK")
		if err != nil {
			return nil, errorf("claim %q: %w", destination, err)
		}
		return &batch{}, nil
	}
	return &batch{conn: conn, sql: &s.sql, recs: recs}, nil
}

// end ends the transaction on conn with sql (ROLLBACK), even when ctx is
// done, and gives conn back to the pool, which closes it if the
// transaction is still open.
func end(ctx context.Context, conn *pgxpool.Conn, sql string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(rctx, sql)
	conn.Release()
}

// batch is a claim: the connection whose open transaction holds its heads.
type batch struct {
	conn *pgxpool.Conn
	sql  *statements
	recs []outbox.Record
}

func (b *batch) Records() []outbox.Record { return b.recs }

// Finish implements [outbox.Batch.Finish]: the outcome's updates and COMMIT
// go in one round trip. A retried record's later pending records are made
// to wait as long as it does.
//
// The commit does not wait for its WAL to reach disk (synchronous_commit
// off for this transaction only): a database crash right after it may
// forget the last outcomes stored, whose records are then published again
// — duplicates with the same IDs, which consumers drop — but never lose a
// record, which was committed by the enqueueing transaction.
func (b *batch) Finish(ctx context.Context, o outbox.Outcome) (err error) {
	conn := b.conn
	if conn == nil {
		return nil
	}
	b.conn = nil
	if len(o.Dispatched) == 0 && len(o.Retry) == 0 && len(o.Dead) == 0 {
		end(ctx, conn, "ROLLBACK")
		return nil
	}
	var q pgx.Batch
	q.Queue("SET LOCAL synchronous_commit = off")
	if len(o.Dispatched) > 0 {
		q.Queue(b.sql.dispatched, o.Dispatched)
	}
	if len(o.Retry) > 0 {
		seqs, reasons, delays := make([]int64, len(o.Retry)), make([]string, len(o.Retry)), make([]int64, len(o.Retry))
		for i, f := range o.Retry {
			seqs[i], reasons[i], delays[i] = f.Seq, reason(f.Reason), pgname.Micros(max(f.Delay, 0))
		}
		q.Queue(b.sql.retry, seqs, reasons, delays)
	}
	if len(o.Dead) > 0 {
		seqs, reasons := make([]int64, len(o.Dead)), make([]string, len(o.Dead))
		for i, f := range o.Dead {
			seqs[i], reasons[i] = f.Seq, reason(f.Reason)
		}
		q.Queue(b.sql.dead, seqs, reasons)
	}
	q.Queue("COMMIT")
	if err := conn.SendBatch(ctx, &q).Close(); err != nil {
		end(ctx, conn, "ROLLBACK")
		return errorf("finish: %w", err)
	}
	if st := conn.Conn().PgConn().TxStatus(); st != 'I' {
		end(ctx, conn, "ROLLBACK")
		return errorf("finish: transaction status %q after COMMIT", st)
	}
	conn.Release()
	return nil
}

// reason makes an error text storable: valid UTF-8 without NUL, at most
// maxReason bytes.
func reason(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// Listen implements [outbox.Store.Listen] on a dedicated connection (not
// one of the pool's), made with the pool's connection settings: LISTEN on
// [Store.Channel], then wake("") and wake(destination) for each
// notification an enqueue sends at its commit.
func (s *Store) Listen(ctx context.Context, wake func(destination string)) error {
	if err := s.check(ctx); err != nil {
		if errors.Is(err, ErrClosed) {
			return errorf("listen: %w", err)
		}
		return nil
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return errorf("listen: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+s.names.channelIdent); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return errorf("listen: %w", err)
	}
	wake("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return errorf("listen: %w", err)
		}
		wake(n.Payload)
	}
}
