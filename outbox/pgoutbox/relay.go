package pgoutbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

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
// transaction rolls back.
func (s *Store) Claim(ctx context.Context, destination string, limit int) (outbox.Batch, error) {
	if limit < 1 {
		return nil, fmt.Errorf("pgoutbox: claim: limit %d < 1", limit)
	}
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("pgoutbox: claim: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgoutbox: claim: begin: %w", err)
	}
	rows, err := tx.Query(ctx, s.sql.claim, destination, limit)
	var recs []outbox.Record
	if err == nil {
		recs, err = pgx.CollectRows(rows, scanRecord)
	}
	if err != nil || len(recs) == 0 {
		rollback(ctx, tx)
		if err != nil {
			return nil, fmt.Errorf("pgoutbox: claim %q: %w", destination, err)
		}
		return &batch{}, nil
	}
	return &batch{tx: tx, sql: &s.sql, recs: recs}, nil
}

func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// batch is a claim: the open transaction holding its heads.
type batch struct {
	tx   pgx.Tx
	sql  *statements
	recs []outbox.Record
}

func (b *batch) Records() []outbox.Record { return b.recs }

// Finish implements [outbox.Batch.Finish]: the outcome's updates go in one
// round trip, then COMMIT. A retried record's later pending records are made
// to wait as long as it does.
func (b *batch) Finish(ctx context.Context, o outbox.Outcome) (err error) {
	tx := b.tx
	if tx == nil {
		return nil
	}
	b.tx = nil
	if len(o.Dispatched) == 0 && len(o.Retry) == 0 && len(o.Dead) == 0 {
		rollback(ctx, tx)
		return nil
	}
	defer func() {
		if err != nil {
			rollback(ctx, tx)
			err = fmt.Errorf("pgoutbox: finish: %w", err)
		}
	}()
	var q pgx.Batch
	if len(o.Dispatched) > 0 {
		q.Queue(b.sql.dispatched, o.Dispatched)
	}
	if len(o.Retry) > 0 {
		seqs, reasons, delays := make([]int64, len(o.Retry)), make([]string, len(o.Retry)), make([]int64, len(o.Retry))
		for i, f := range o.Retry {
			seqs[i], reasons[i], delays[i] = f.Seq, reason(f.Reason), micros(max(f.Delay, 0))
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
	if err := tx.SendBatch(ctx, &q).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
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
			return fmt.Errorf("pgoutbox: listen: %w", err)
		}
		return nil
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("pgoutbox: listen: connect: %w", err)
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
		return fmt.Errorf("pgoutbox: listen: %w", err)
	}
	wake("")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("pgoutbox: listen: %w", err)
		}
		wake(n.Payload)
	}
}
