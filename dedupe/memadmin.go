package dedupe

import (
	"context"
	"time"
)

var _ Admin = (*Memory)(nil)

// Inspect implements [Admin.Inspect]. A released key and a key swept after
// its lease or retention ended have no record: they are [Absent].
func (m *Memory) Inspect(ctx context.Context, key Key) (Record, error) {
	if err := m.check(ctx, "inspect", key); err != nil {
		return Record{}, err
	}
	if err := key.Validate(); err != nil {
		return Record{}, errorf("memory inspect: %w", err)
	}
	mk, known, _ := m.intern(key, false)
	if !known {
		return Record{}, nil
	}
	s := m.shard(mk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		return Record{}, errorf("memory inspect %s: %w", key, ErrClosed)
	}
	e, ok := s.m[mk]
	if !ok {
		return Record{}, nil
	}
	return m.record(e, m.now()), nil
}

// Forget implements [Admin.Forget]. Tokens are issued per shard, and a key
// never moves shards, so the next acquisition's token is larger than any
// issued for the key before.
func (m *Memory) Forget(ctx context.Context, key Key, force bool) (Record, error) {
	if err := m.check(ctx, "forget", key); err != nil {
		return Record{}, err
	}
	if err := key.Validate(); err != nil {
		return Record{}, errorf("memory forget: %w", err)
	}
	mk, known, _ := m.intern(key, false)
	if !known {
		return Record{}, nil
	}
	s := m.shard(mk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		return Record{}, errorf("memory forget %s: %w", key, ErrClosed)
	}
	e, ok := s.m[mk]
	if !ok {
		return Record{}, nil
	}
	r := m.record(e, m.now())
	if r.Live() && !force {
		return r, errorf("memory forget %s: %v: %w", key, r, ErrLeaseHeld)
	}
	// A completion's item in s.completed becomes stale and is skipped.
	delete(s.m, mk)
	return r, nil
}

// record describes e at now. s.mu held.
func (m *Memory) record(e memEntry, now int64) Record {
	r := Record{State: Leased, Token: e.token, Until: m.wall(e.until)}
	if e.done {
		r.State = Done
		if e.forever {
			r.Until = time.Time{}
		}
	}
	r.Expired = !e.forever && now >= e.until
	return r
}
