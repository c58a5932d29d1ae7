package boltstore

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uuidforge/uuidforge/dedupe"
)

var _ dedupe.Admin = (*Store)(nil)

// Inspect implements [dedupe.Admin.Inspect] with a read transaction. A
// released key has no record ([dedupe.Absent]); a record whose lease or
// retention ended is reported Expired until the cleanup deletes it.
func (s *Store) Inspect(ctx context.Context, key dedupe.Key) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("boltstore: inspect: %w", err)
	}
	if err := s.begin(ctx, "inspect", key); err != nil {
		return dedupe.Record{}, err
	}
	defer s.mu.RUnlock()
	var r dedupe.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = s.recordOf(tx, recordKey(key), time.Now().UnixNano())
		return err
	})
	if err != nil {
		return dedupe.Record{}, s.wrap("inspect", key, err)
	}
	return r, nil
}

// Forget implements [dedupe.Admin.Forget] in one write transaction (shared
// with other writers by group commit). Tokens come from the records
// bucket's sequence, so the next claim's token is larger than any issued
// before, record or no record.
func (s *Store) Forget(ctx context.Context, key dedupe.Key, force bool) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("boltstore: forget: %w", err)
	}
	if err := s.begin(ctx, "forget", key); err != nil {
		return dedupe.Record{}, err
	}
	defer s.mu.RUnlock()
	rk := recordKey(key)
	var r dedupe.Record
	err := s.write(func(tx *bolt.Tx) error {
		var err error
		if r, err = s.recordOf(tx, rk, time.Now().UnixNano()); err != nil {
			return err
		}
		if r.State == dedupe.Absent || (r.Live() && !force) {
			return nil
		}
		old, err := decode(s.records(tx).Get(rk))
		if err != nil {
			return err
		}
		if old.until != 0 {
			if err := s.expiry(tx).Delete(expiryKey(old.until, rk)); err != nil {
				return err
			}
		}
		return s.records(tx).Delete(rk)
	})
	if err != nil {
		return dedupe.Record{}, s.wrap("forget", key, err)
	}
	if r.Live() && !force {
		return r, fmt.Errorf("boltstore: forget %s: %v: %w", key, r, dedupe.ErrLeaseHeld)
	}
	return r, nil
}

// recordOf describes the record at rk in tx at now (Unix ns).
func (s *Store) recordOf(tx *bolt.Tx, rk []byte, now int64) (dedupe.Record, error) {
	v := s.records(tx).Get(rk)
	if v == nil {
		return dedupe.Record{}, nil
	}
	rec, err := decode(v)
	if err != nil {
		return dedupe.Record{}, err
	}
	r := dedupe.Record{Token: rec.token, Expired: rec.expired(now)}
	switch rec.state {
	case stateLease:
		r.State = dedupe.Leased
	case stateDone:
		r.State = dedupe.Done
	default:
		return dedupe.Record{}, fmt.Errorf("corrupt record state %d", rec.state)
	}
	if rec.until != 0 {
		r.Until = time.Unix(0, rec.until)
	}
	return r, nil
}
