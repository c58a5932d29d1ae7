package dedupe

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the memory store.
const (
	// DefaultMaxEntries bounds a [Memory] store unless [WithMaxEntries]
	// says otherwise (about 100 MB of keys).
	DefaultMaxEntries = 1 << 20
	// DefaultSweepInterval is how often a [Memory] store drops expired
	// entries unless [WithSweepInterval] says otherwise.
	DefaultSweepInterval = time.Minute
	// memShards is the number of independently locked shards of a large
	// Memory store; a store bounded below shardingThreshold has one shard so
	// that its bound is exact.
	memShards         = 64
	shardingThreshold = 64 * 1024
	// fullSweepGap limits how often a full shard is swept for expired
	// entries before its oldest completed key is evicted.
	fullSweepGap = time.Second
	// MaxMemoryScopes is how many distinct scopes one [Memory] store
	// accepts; a Claim with one more fails with [ErrFull].
	MaxMemoryScopes = 1 << 16
)

// Memory is the in-process [Store]: the default, for a single consumer
// process. It is safe for concurrent use.
//
// It is bounded: it holds at most MaxEntries keys (see [WithMaxEntries]).
// When it is full and a new key is claimed, it makes room by this rule:
//  1. the key completed longest ago, if its retention has ended;
//  2. otherwise, when a lease may have expired, every entry whose lease or
//     retention has ended (a scan, at most once a second);
//  3. otherwise the key completed longest ago, whatever its retention
//     ([Forever] included): a redelivery of that message after this point is
//     processed again;
//  4. a live lease is never evicted: when only live leases remain, Claim
//     returns an error wrapping [ErrFull] and the caller retries later.
//
// Stores of at least 65536 entries are split into 64 shards by message ID,
// each bounded by MaxEntries/64, so the rule applies per shard and ErrFull can
// come slightly before MaxEntries live leases in total. Each key costs about
// 100 bytes. Scopes are interned: a store accepts [MaxMemoryScopes] distinct
// scopes (consumers use a handful).
//
// A background goroutine drops expired entries every sweep interval; [Memory.Close]
// stops it, and every call after Close returns [ErrClosed].
//
// Complete after the lease ended succeeds as long as nobody claimed the key
// meanwhile and the expired lease was not yet swept; otherwise it returns
// [ErrLeaseLost].
//
// It is a [BatchStore]: a batch takes each key's shard lock in turn, as the
// single calls would, and saves only the per-call checks; a ClaimBatch that
// meets [ErrFull] midway gives back what it acquired and fails.
//
// It is an [Admin]: Inspect and Forget take the key's shard lock once.
type Memory struct {
	shards    []memShard
	mask      uint64
	shardCap  int
	lease     time.Duration
	retention time.Duration
	epoch     time.Time // monotonic origin of every deadline
	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	// Scopes are interned to small numbers so that keys hold no pointers
	// (the garbage collector then never scans the maps) and hash fast.
	scopes  atomic.Pointer[map[string]uint32] // copied on write
	scopeMu sync.Mutex
}

// memKey is a Key with its scope interned.
// Two words and a scope number: compared field by field, faster than the
// byte-wise comparison a [16]byte array would get.
type memKey struct {
	hi, lo uint64
	scope  uint32
}

type memShard struct {
	mu        sync.Mutex
	m         map[memKey]memEntry
	token     uint64   // last token issued in this shard; keys never move shards
	completed memQueue // completion order, for eviction; stale items are skipped
	lastSweep int64
	// minLease is a lower bound of the live leases' ends: before it no
	// lease can have expired, so a full shard need not be scanned.
	minLease int64
	_        [64]byte // keep shards' locks on separate cache lines
}

type memEntry struct {
	token   uint64
	until   int64 // lease end or retention end, nanoseconds since epoch
	done    bool
	forever bool
}

type memDone struct {
	key   memKey
	token uint64
}

// MemoryOption configures [NewMemory]; a bad value is an error from
// NewMemory that names the option.
type MemoryOption func(*memoryConfig) error

type memoryConfig struct {
	maxEntries int
	lease      time.Duration
	retention  time.Duration
	sweep      time.Duration
}

// WithMaxEntries bounds the store to n keys (leases and completed keys
// together); n must be positive. Default [DefaultMaxEntries]. See [Memory]
// for the eviction rule.
func WithMaxEntries(n int) MemoryOption {
	return func(c *memoryConfig) error {
		if n <= 0 {
			return errorf("WithMaxEntries(%d): must be positive", n)
		}
		c.maxEntries = n
		return nil
	}
}

// WithDefaultLease sets the lease Claim uses when given 0; d must be
// positive. Default [DefaultLease].
func WithDefaultLease(d time.Duration) MemoryOption {
	return func(c *memoryConfig) error {
		if d <= 0 {
			return errorf("WithDefaultLease(%v): %w", d, ErrInvalidDuration)
		}
		c.lease = d
		return nil
	}
}

// WithDefaultRetention sets the retention Complete uses when given 0; d
// must be positive or [Forever]. Default [DefaultRetention].
func WithDefaultRetention(d time.Duration) MemoryOption {
	return func(c *memoryConfig) error {
		if d <= 0 && d != Forever {
			return errorf("WithDefaultRetention(%v): %w", d, ErrInvalidDuration)
		}
		c.retention = d
		return nil
	}
}

// WithSweepInterval sets how often the background goroutine drops expired
// entries; d must be positive. Default [DefaultSweepInterval]. Expired
// entries are also dropped when the store is full, so this only decides how
// soon their memory is freed.
func WithSweepInterval(d time.Duration) MemoryOption {
	return func(c *memoryConfig) error {
		if d <= 0 {
			return errorf("WithSweepInterval(%v): must be positive", d)
		}
		c.sweep = d
		return nil
	}
}

// NewMemory returns an empty memory store and starts its sweeping goroutine;
// call [Memory.Close] to stop it. It fails only on an invalid option (nil
// options are ignored).
func NewMemory(opts ...MemoryOption) (*Memory, error) {
	cfg := memoryConfig{
		maxEntries: DefaultMaxEntries,
		lease:      DefaultLease,
		retention:  DefaultRetention,
		sweep:      DefaultSweepInterval,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	n := 1
	if cfg.maxEntries >= shardingThreshold {
		n = memShards
	}
	m := &Memory{
		shards:    make([]memShard, n),
		mask:      uint64(n - 1),
		shardCap:  (cfg.maxEntries + n - 1) / n,
		lease:     cfg.lease,
		retention: cfg.retention,
		epoch:     time.Now(),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[memKey]memEntry)
		m.shards[i].lastSweep = -int64(fullSweepGap) // the first full shard may be scanned
		m.shards[i].minLease = math.MaxInt64
	}
	m.scopes.Store(&map[string]uint32{})
	go m.janitor(cfg.sweep)
	return m, nil
}

var _ BatchStore = (*Memory)(nil)

func (m *Memory) now() int64 { return int64(time.Since(m.epoch)) }

func (m *Memory) wall(t int64) time.Time { return m.epoch.Add(time.Duration(t)) }

// intern returns k with its scope's number; with create false, ok is false
// for a scope never claimed.
func (m *Memory) intern(k Key, create bool) (mk memKey, ok bool, err error) {
	mk.hi = binary.LittleEndian.Uint64(k.ID[:8])
	mk.lo = binary.LittleEndian.Uint64(k.ID[8:])
	if mk.scope, ok = (*m.scopes.Load())[k.Scope]; ok || !create {
		return mk, ok, nil
	}
	m.scopeMu.Lock()
	defer m.scopeMu.Unlock()
	old := *m.scopes.Load()
	if mk.scope, ok = old[k.Scope]; ok {
		return mk, true, nil
	}
	if len(old) >= MaxMemoryScopes {
		return mk, false, fmt.Errorf("%w: %d scopes", ErrFull, len(old))
	}
	next := make(map[string]uint32, len(old)+1)
	for s, n := range old {
		next[s] = n
	}
	mk.scope = uint32(len(old) + 1)
	next[strings.Clone(k.Scope)] = mk.scope
	m.scopes.Store(&next)
	return mk, true, nil
}

func (m *Memory) shard(k memKey) *memShard {
	h := k.hi ^ k.lo
	h ^= h >> 32
	h ^= h >> 16
	return &m.shards[h&m.mask]
}

func (m *Memory) check(ctx context.Context, op string, k Key) error {
	if m.closed.Load() {
		return errorf("memory %s %s: %w", op, k, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return errorf("memory %s %s: %w", op, k, err)
	}
	return nil
}

// Claim implements [Store.Claim].
func (m *Memory) Claim(ctx context.Context, key Key, lease time.Duration) (Claim, error) {
	if err := m.check(ctx, "claim", key); err != nil {
		return Claim{}, err
	}
	if err := key.Validate(); err != nil {
		return Claim{}, errorf("memory claim: %w", err)
	}
	lease, err := LeaseOrDefault(lease, m.lease)
	if err != nil {
		return Claim{}, errorf("memory claim %s: %w", key, err)
	}
	mk, _, err := m.intern(key, true)
	if err != nil {
		return Claim{}, errorf("memory claim %s: %w", key, err)
	}
	c, err := m.claim(key, mk, lease)
	if err != nil {
		return Claim{}, errorf("memory claim %s: %w", key, err)
	}
	return c, nil
}

// claim is Claim for a valid key interned as mk.
func (m *Memory) claim(key Key, mk memKey, lease time.Duration) (Claim, error) {
	now := m.now()
	s := m.shard(mk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil { // closed meanwhile
		return Claim{}, ErrClosed
	}
	e, ok := s.m[mk]
	switch {
	case ok && e.done && (e.forever || now < e.until):
		c := Claim{Key: key, Status: Duplicate}
		if !e.forever {
			c.Until = m.wall(e.until)
		}
		return c, nil
	case ok && !e.done && now < e.until:
		return Claim{Key: key, Status: InFlight, Until: m.wall(e.until)}, nil
	case !ok && len(s.m) >= m.shardCap:
		if !s.makeRoom(now, m.shardCap) {
			return Claim{}, fmt.Errorf("%w (%d live leases)", ErrFull, m.shardCap)
		}
	}
	s.token++
	e = memEntry{token: s.token, until: addSat(now, lease)}
	s.minLease = min(s.minLease, e.until)
	s.m[mk] = e
	return Claim{Key: key, Status: Acquired, Token: e.token, Until: m.wall(e.until)}, nil
}

// Complete implements [Store.Complete].
func (m *Memory) Complete(ctx context.Context, c Claim, retention time.Duration) error {
	if err := m.check(ctx, "complete", c.Key); err != nil {
		return err
	}
	retention, err := RetentionOrDefault(retention, m.retention)
	if err != nil {
		if cerr := CheckClaim(c); cerr != nil {
			err = cerr
		}
		return errorf("memory complete %s: %w", c.Key, err)
	}
	return m.finish("complete", c, retention)
}

// Release implements [Store.Release].
func (m *Memory) Release(ctx context.Context, c Claim) error {
	if err := m.check(ctx, "release", c.Key); err != nil {
		return err
	}
	return m.finish("release", c, 0)
}

// finish completes c for retention (op "complete") or releases it (op
// "release"), returning the error Complete or Release would.
func (m *Memory) finish(op string, c Claim, retention time.Duration) error {
	if err := CheckClaim(c); err != nil {
		return errorf("memory %s %s: %w", op, c.Key, err)
	}
	mk, known, _ := m.intern(c.Key, false)
	if !known {
		return errorf("memory %s %s token %d: %w", op, c.Key, c.Token, ErrLeaseLost)
	}
	now := m.now()
	s := m.shard(mk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		return errorf("memory %s %s: %w", op, c.Key, ErrClosed)
	}
	e, ok := s.m[mk]
	if !ok || e.done || e.token != c.Token {
		return errorf("memory %s %s token %d: %w", op, c.Key, c.Token, ErrLeaseLost)
	}
	if op == "release" {
		delete(s.m, mk)
		return nil
	}
	e.done = true
	if retention == Forever {
		e.forever = true
	} else {
		e.until = addSat(now, retention)
	}
	s.m[mk] = e
	s.completed.push(memDone{key: mk, token: c.Token})
	if s.completed.len() > 2*m.shardCap+1024 {
		s.compactLive() // keys completed again and again: drop stale items
	}
	return nil
}

// ClaimBatch implements [BatchStore.ClaimBatch]. Every key is checked (and
// its scope interned) before any is claimed; a claim that fails with
// [ErrFull] midway gives back the keys the batch acquired before it.
func (m *Memory) ClaimBatch(ctx context.Context, keys []Key, lease time.Duration) ([]Claim, error) {
	if err := m.checkBatch(ctx, "claim"); err != nil {
		return nil, err
	}
	lease, err := LeaseOrDefault(lease, m.lease)
	if err != nil {
		return nil, errorf("memory claim batch: %w", err)
	}
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, errorf("memory claim batch: key %d: %w", i, err)
		}
	}
	mks := make([]memKey, len(keys))
	for i, k := range keys {
		if mks[i], _, err = m.intern(k, true); err != nil {
			return nil, errorf("memory claim batch: key %d %s: %w", i, k, err)
		}
	}
	claims := make([]Claim, len(keys))
	for i, k := range keys {
		if claims[i], err = m.claim(k, mks[i], lease); err != nil {
			for _, c := range claims[:i] {
				if c.Acquired() {
					_ = m.finish("release", c, 0)
				}
			}
			return nil, errorf("memory claim batch: key %d %s: %w", i, k, err)
		}
	}
	return claims, nil
}

// CompleteBatch implements [BatchStore.CompleteBatch].
func (m *Memory) CompleteBatch(ctx context.Context, claims []Claim, retention time.Duration) ([]error, error) {
	if err := m.checkBatch(ctx, "complete"); err != nil {
		return nil, err
	}
	retention, err := RetentionOrDefault(retention, m.retention)
	if err != nil {
		return nil, errorf("memory complete batch: %w", err)
	}
	errs := make([]error, len(claims))
	for i, c := range claims {
		errs[i] = m.finish("complete", c, retention)
	}
	return errs, nil
}

// ReleaseBatch implements [BatchStore.ReleaseBatch].
func (m *Memory) ReleaseBatch(ctx context.Context, claims []Claim) ([]error, error) {
	if err := m.checkBatch(ctx, "release"); err != nil {
		return nil, err
	}
	errs := make([]error, len(claims))
	for i, c := range claims {
		errs[i] = m.finish("release", c, 0)
	}
	return errs, nil
}

func (m *Memory) checkBatch(ctx context.Context, op string) error {
	if m.closed.Load() {
		return errorf("memory %s batch: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return errorf("memory %s batch: %w", op, err)
	}
	return nil
}

// DefaultLease returns the lease Claim uses when given 0 ([WithDefaultLease]).
func (m *Memory) DefaultLease() time.Duration { return m.lease }

// Len returns the number of keys held: live and expired leases and
// completed keys not yet swept. It returns 0 after Close.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Close stops the sweeping goroutine, waits for it to exit and drops every
// key. Calls after Close return [ErrClosed]. Close is idempotent and always
// returns nil.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		close(m.stop)
		<-m.done
		for i := range m.shards {
			s := &m.shards[i]
			s.mu.Lock()
			s.m = nil
			s.completed = memQueue{}
			s.mu.Unlock()
		}
	})
	return nil
}

func (m *Memory) janitor(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			for i := range m.shards {
				s := &m.shards[i]
				s.mu.Lock()
				if s.m != nil {
					s.sweep(m.now())
				}
				s.mu.Unlock()
			}
		}
	}
}

// sweep drops expired entries and stale queue items. s.mu held.
func (s *memShard) sweep(now int64) {
	s.lastSweep = now
	s.minLease = math.MaxInt64
	for k, e := range s.m {
		switch {
		case e.forever:
		case now >= e.until:
			delete(s.m, k)
		case !e.done:
			s.minLease = min(s.minLease, e.until)
		}
	}
	s.compactLive()
}

// compactLive drops queue items whose key is gone or was claimed again.
// s.mu held.
func (s *memShard) compactLive() {
	s.completed.filter(func(d memDone) bool {
		e, ok := s.m[d.key]
		return ok && e.done && e.token == d.token
	})
}

// makeRoom frees one slot of a full shard by the rule documented on Memory,
// reporting false when only live leases remain. s.mu held.
func (s *memShard) makeRoom(now int64, limit int) bool {
	// 1. The oldest completed key, if its retention has ended.
	for {
		d, ok := s.completed.peek()
		if !ok {
			break
		}
		e, ok := s.m[d.key]
		if !ok || !e.done || e.token != d.token { // stale item
			s.completed.pop()
			continue
		}
		if !e.forever && now >= e.until {
			s.completed.pop()
			delete(s.m, d.key)
			return true
		}
		break
	}
	// 2. Expired leases and retentions, when a lease may have expired.
	if now >= s.minLease && now-s.lastSweep >= int64(fullSweepGap) {
		s.sweep(now)
		if len(s.m) < limit {
			return true
		}
	}
	// 3. The oldest completed key.
	for {
		d, ok := s.completed.pop()
		if !ok {
			break
		}
		if e, ok := s.m[d.key]; ok && e.done && e.token == d.token {
			delete(s.m, d.key)
			return true
		}
	}
	// 4. Only leases left: drop the expired ones, if any.
	s.sweep(now)
	return len(s.m) < limit
}

// addSat returns t+d, saturating instead of overflowing for huge durations.
func addSat(t int64, d time.Duration) int64 {
	if int64(d) > math.MaxInt64-t {
		return math.MaxInt64
	}
	return t + int64(d)
}
