package pgoutbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/outbox"
)

// Backlog returns, for each destination with pending or dead records, the
// number of pending records, the enqueue time and age of the oldest (by the
// database clock) and the number of dead records, sorted by destination.
// It reads only the partial indexes of pending and dead rows, so its cost
// grows with the backlog, not with the dispatched rows kept for retention.
func (s *Store) Backlog(ctx context.Context) ([]outbox.Backlog, error) {
	if err := s.check(ctx); err != nil {
		return nil, errorf("backlog: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.sql.backlog)
	if err != nil {
		return nil, errorf("backlog: %w", err)
	}
	byDest := make(map[string]*outbox.Backlog)
	var (
		dest          string
		pending, dead int64
		oldest        *time.Time
		ageMicros     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&dest, &pending, &oldest, &ageMicros, &dead}, func() error {
		b := byDest[dest]
		if b == nil {
			b = &outbox.Backlog{Destination: dest}
			byDest[dest] = b
		}
		b.Pending += pending
		b.Dead += dead
		if oldest != nil {
			b.Oldest, b.Age = *oldest, time.Duration(ageMicros)*time.Microsecond
		}
		return nil
	})
	if err != nil {
		return nil, errorf("backlog: %w", err)
	}
	out := make([]outbox.Backlog, 0, len(byDest))
	for _, b := range byDest {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b outbox.Backlog) int { return strings.Compare(a.Destination, b.Destination) })
	return out, nil
}

// Dead returns up to limit dead records with a Seq above after, in Seq
// order, of destination ("" for every destination); page with the last
// Seq returned. LastError holds each one's reason.
func (s *Store) Dead(ctx context.Context, destination string, after int64, limit int) ([]outbox.Record, error) {
	if limit < 1 {
		return nil, errorf("dead: limit %d < 1", limit)
	}
	if err := s.check(ctx); err != nil {
		return nil, errorf("dead: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.sql.deadList, destination, after, limit)
	if err != nil {
		return nil, errorf("dead: %w", err)
	}
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, errorf("dead: %w", err)
	}
	return recs, nil
}

// Lookup returns the record of destination with message ID id, in
// whatever state it is, or an error wrapping [ErrNotFound] (never enqueued,
// rolled back, or dispatched and cleaned up).
func (s *Store) Lookup(ctx context.Context, destination string, id uuid.UUID) (outbox.Record, error) {
	if err := s.check(ctx); err != nil {
		return outbox.Record{}, errorf("lookup: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.sql.lookup, destination, [16]byte(id))
	if err != nil {
		return outbox.Record{}, errorf("lookup %s: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecord)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, errorf("lookup %q %s: %w", destination, id, ErrNotFound)
	}
	if err != nil {
		return r, errorf("lookup %s: %w", id, err)
	}
	return r, nil
}

// Redrive makes the dead record seq pending again, due now, with its
// attempts reset, and returns its new Seq: it goes to the end of its key's
// queue (after the records enqueued since), so it is published after them.
// It returns an error wrapping [ErrNotFound] when no dead record has that
// Seq.
func (s *Store) Redrive(ctx context.Context, seq int64) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, errorf("redrive: %w", err)
	}
	var (
		newSeq int64
		dest   string
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, s.sql.redrive, seq).Scan(&newSeq, &dest); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.sql.notify, s.names.channel, dest)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errorf("redrive %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return 0, errorf("redrive %d: %w", seq, err)
	}
	return newSeq, nil
}

// RedriveAll redrives (see [Store.Redrive]) every record of destination that
// is dead when it begins, in statements of at most limit rows (0:
// [DefaultCleanupBatch]), keeping their relative order, and returns how
// many it redrove. Records dying again meanwhile are not redriven twice.
func (s *Store) RedriveAll(ctx context.Context, destination string, limit int) (int64, error) {
	if limit < 0 {
		return 0, errorf("redrive: negative limit %d", limit)
	}
	if limit == 0 {
		limit = DefaultCleanupBatch
	}
	if err := s.check(ctx); err != nil {
		return 0, errorf("redrive: %w", err)
	}
	var upTo int64
	if err := s.pool.QueryRow(ctx, s.sql.maxDead, destination).Scan(&upTo); err != nil {
		return 0, errorf("redrive %q: %w", destination, err)
	}
	var total int64
	for upTo > 0 {
		var n int64
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, s.sql.redriveAll, destination, limit, upTo)
			if err != nil {
				return err
			}
			if n = tag.RowsAffected(); n > 0 {
				_, err = tx.Exec(ctx, s.sql.notify, s.names.channel, destination)
			}
			return err
		})
		if err != nil {
			return total, errorf("redrive %q: %w", destination, err)
		}
		total += n
		if n < int64(limit) {
			break
		}
	}
	return total, nil
}
