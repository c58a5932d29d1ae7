package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/dedupe"
)

var _ dedupe.Admin = (*Store)(nil)

// recordSQL reads a key's row; lock adds FOR UPDATE. ended is whether a
// leased or done row's expiry has passed by the database clock.
func (s *Store) recordSQL(lock bool) string {
	q := `SELECT state, token, expires_at, coalesce(expires_at <= clock_timestamp(), false)
FROM ` + s.names.table + `
WHERE scope = $1 AND id = $2`
	if lock {
		q += ` FOR UPDATE`
	}
	return q
}

// Inspect implements [dedupe.Admin.Inspect] with one SELECT. Expiry is
// judged by the database clock. A released row is [dedupe.Released] until
// [Store.Cleanup] deletes it; a row whose lease or retention ended is
// reported Expired until then.
func (s *Store) Inspect(ctx context.Context, key dedupe.Key) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: inspect: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: inspect %s: %w", key, err)
	}
	r, err := scanRecord(s.pool.QueryRow(ctx, s.recordSQL(false), key.Scope, [16]byte(key.ID)))
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: inspect %s: %w", key, err)
	}
	return r, nil
}

// Forget implements [dedupe.Admin.Forget] in one transaction: it locks the
// key's row (waiting for a transaction that holds it, such as an inbox
// completion about to commit), checks it and deletes it. Tokens come from
// the table's sequence, so the next claim's token is larger than any
// issued before, row or no row.
func (s *Store) Forget(ctx context.Context, key dedupe.Key, force bool) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: forget: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: forget %s: %w", key, err)
	}
	var r dedupe.Record
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if r, err = scanRecord(tx.QueryRow(ctx, s.recordSQL(true), key.Scope, [16]byte(key.ID))); err != nil {
			return err
		}
		if r.State == dedupe.Absent || (r.Live() && !force) {
			return nil
		}
		_, err = tx.Exec(ctx, `DELETE FROM `+s.names.table+` WHERE scope = $1 AND id = $2`, key.Scope, [16]byte(key.ID))
		return err
	})
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("pgstore: forget %s: %w", key, err)
	}
	if r.Live() && !force {
		return r, fmt.Errorf("pgstore: forget %s: %v: %w", key, r, dedupe.ErrLeaseHeld)
	}
	return r, nil
}

// scanRecord reads one row of recordSQL; no row is the absent record.
func scanRecord(row pgx.Row) (dedupe.Record, error) {
	var (
		state   string
		token   int64
		expires *time.Time
		ended   bool
	)
	switch err := row.Scan(&state, &token, &expires, &ended); {
	case errors.Is(err, pgx.ErrNoRows):
		return dedupe.Record{}, nil
	case err != nil:
		return dedupe.Record{}, err
	}
	r := dedupe.Record{Token: uint64(token)}
	switch state {
	case "leased":
		r.State = dedupe.Leased
	case "done":
		r.State = dedupe.Done
	case "released":
		return dedupe.Record{State: dedupe.Released, Token: uint64(token)}, nil
	default:
		return dedupe.Record{}, fmt.Errorf("corrupt row: state %q", state)
	}
	if expires != nil {
		r.Until = *expires
	}
	r.Expired = ended
	return r, nil
}
