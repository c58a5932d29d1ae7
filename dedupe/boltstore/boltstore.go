package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/uuidforge/uuidforge/dedupe"
)

// Defaults, each overridable by an [Option].
const (
	// DefaultBucket is the name of the top-level bucket holding a store's
	// records and expiry index (see the package doc for the layout).
	DefaultBucket = "dedupe"
	// DefaultOpenTimeout is how long [Open] waits for the file lock before
	// failing with [ErrLocked].
	DefaultOpenTimeout = time.Second
	// DefaultCleanupInterval is how often expired entries are deleted.
	DefaultCleanupInterval = time.Minute
	// DefaultCleanupBatch is how many expired entries one cleanup
	// transaction deletes; claims wait at most for one such transaction.
	DefaultCleanupBatch = 1000
	// maxGroup bounds how many calls share one write transaction.
	maxGroup = 512
)

// ErrLocked is returned (wrapped) by [Open] when another process — or another
// Store of this process — holds the file: bbolt allows one opener per file.
var ErrLocked = errors.New("boltstore: database file is locked by another opener")

// ErrLayout is returned (wrapped) by [Open] and [New] when the store's bucket
// exists but holds something other than this store's layout: a file written
// by a version of boltstore before the nested layout (one bucket of records
// named after the store and a sibling "<name>.expiry"), or another program's
// bucket of that name. Nothing in the file is changed; use another bucket name
// ([WithBucket]) or another file. Entries of an old file are not migrated: a
// message completed in it is processed again once after the switch.
var ErrLayout = errors.New("boltstore: bucket is not in this store's layout")

// The layout inside a store's bucket (see the package doc).
var (
	layoutKey     = []byte("layout")
	layoutVersion = []byte("uuidforge-dedupe/2")
	recordsName   = []byte("records")
	expiryName    = []byte("expiry")
)

// Record states.
const (
	stateLease byte = 1
	stateDone  byte = 2
	recordLen       = 1 + 8 + 8 // state, token, until (Unix ns; 0: forever)
)

// Store is a [dedupe.Store] in a bbolt file: one machine, remembered across
// restarts. It is safe for concurrent use by many goroutines of one process;
// bbolt allows a single process (a single opener) per file.
//
// Each Claim that acquires and each Complete and Release is a write; one
// goroutine commits them, taking every write queued while the previous
// commit ran into the next transaction (group commit), so concurrent callers
// share commits and fsyncs without waiting for a timer. A Claim answered
// Duplicate or InFlight only reads. Deadlines are wall-clock
// times stored in the file, so they keep across restarts (a clock jumping
// forward expires leases and retentions early).
//
// The context is checked before each call's transaction; a transaction once
// started runs to completion.
type Store struct {
	db        *bolt.DB
	owned     bool
	bucket    []byte // the store's top-level bucket: records and expiry inside
	lease     time.Duration
	retention time.Duration
	batch     int

	mu         sync.RWMutex // held shared by calls, exclusively by Close
	closed     bool
	writes     chan writeReq
	stop       chan struct{}
	done       chan struct{} // cleaner exited
	writerDone chan struct{}
}

type writeReq struct {
	fn   func(*bolt.Tx) error // may run twice: must be idempotent
	done chan error
}

var (
	_ dedupe.BatchStore    = (*Store)(nil)
	_ dedupe.DefaultLeaser = (*Store)(nil)
)

// Option configures [Open] and [New]; a bad value is an error from them
// that names the option.
type Option func(*config) error

type config struct {
	bucket      string
	lease       time.Duration
	retention   time.Duration
	openTimeout time.Duration
	cleanup     time.Duration
	batch       int
	noSync      bool
	openOnly    []string // options that only Open honours, given
}

// WithBucket names the top-level bucket that holds the store's records and
// expiry index; name must not be empty. Default [DefaultBucket]. Use
// different names to keep independent stores in one file: every name is its
// own bucket, so no name can reach into another store's data. The bucket
// must be new, empty, or a store's bucket; anything else fails with
// [ErrLayout].
func WithBucket(name string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New(`boltstore: WithBucket(""): empty bucket name`)
		}
		c.bucket = name
		return nil
	}
}

// WithDefaultLease sets the lease Claim uses when given 0; d must be
// positive. Default [dedupe.DefaultLease].
func WithDefaultLease(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("boltstore: WithDefaultLease(%v): %w", d, dedupe.ErrInvalidDuration)
		}
		c.lease = d
		return nil
	}
}

// WithDefaultRetention sets the retention Complete uses when given 0; d must
// be positive or [dedupe.Forever], which keeps keys until deleted. Default
// [dedupe.DefaultRetention].
func WithDefaultRetention(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 && d != dedupe.Forever {
			return fmt.Errorf("boltstore: WithDefaultRetention(%v): %w", d, dedupe.ErrInvalidDuration)
		}
		c.retention = d
		return nil
	}
}

// WithOpenTimeout sets how long [Open] waits for the file lock; d must be
// positive (bbolt would otherwise wait forever). Default
// [DefaultOpenTimeout]. It configures the file Open opens, so [New], which
// takes an open database, rejects it.
func WithOpenTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("boltstore: WithOpenTimeout(%v): must be positive (bbolt would wait forever)", d)
		}
		c.openTimeout = d
		c.openOnly = append(c.openOnly, "WithOpenTimeout")
		return nil
	}
}

// WithCleanupInterval sets how often expired entries are deleted; d must be
// positive. Default [DefaultCleanupInterval].
func WithCleanupInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("boltstore: WithCleanupInterval(%v): must be positive", d)
		}
		c.cleanup = d
		return nil
	}
}

// WithCleanupBatch sets how many expired entries one cleanup transaction
// deletes; n must be positive. Default [DefaultCleanupBatch].
func WithCleanupBatch(n int) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("boltstore: WithCleanupBatch(%d): must be positive", n)
		}
		c.batch = n
		return nil
	}
}

// WithNoSync skips fsync on commit (bbolt's DB.NoSync) for the file [Open]
// opens: much faster; a process crash loses nothing, but a power failure or
// OS crash can lose recent claims and completions, i.e. let messages be
// processed twice. Default false (durable). [New] rejects it: set NoSync on
// your own *bbolt.DB instead.
func WithNoSync() Option {
	return func(c *config) error {
		c.noSync = true
		c.openOnly = append(c.openOnly, "WithNoSync")
		return nil
	}
}

func newConfig(opts []Option) (config, error) {
	c := config{
		bucket:      DefaultBucket,
		lease:       dedupe.DefaultLease,
		retention:   dedupe.DefaultRetention,
		openTimeout: DefaultOpenTimeout,
		cleanup:     DefaultCleanupInterval,
		batch:       DefaultCleanupBatch,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Open opens (creating if needed) the bbolt file at path and returns a store
// that owns it: [Store.Close] closes the file. If another opener holds the
// file, Open fails after the open timeout with an error wrapping [ErrLocked].
func Open(path string, opts ...Option) (*Store, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: cfg.openTimeout, NoSync: cfg.noSync})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v): %w", ErrLocked, path, cfg.openTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	s, err := newStore(db, true, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// New returns a store in the caller's open database, creating its bucket.
// [Store.Close] stops the store but leaves db open. Options that configure
// the file ([WithOpenTimeout], [WithNoSync]) are an error here: db is opened
// already. Nil options are ignored.
func New(db *bolt.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, errors.New("boltstore: nil *bbolt.DB")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if len(cfg.openOnly) > 0 {
		return nil, fmt.Errorf("boltstore: %s configures the file Open opens; New takes an open *bbolt.DB (set its options when you open it)", cfg.openOnly[0])
	}
	return newStore(db, false, cfg)
}

func newStore(db *bolt.DB, owned bool, cfg config) (*Store, error) {
	s := &Store{
		db:         db,
		owned:      owned,
		bucket:     []byte(cfg.bucket),
		lease:      cfg.lease,
		retention:  cfg.retention,
		batch:      cfg.batch,
		writes:     make(chan writeReq),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if err := db.Update(s.createLayout); err != nil {
		var lm layoutMismatch
		if errors.As(err, &lm) {
			return nil, fmt.Errorf("%w: bucket %q: %s", ErrLayout, cfg.bucket, string(lm))
		}
		return nil, fmt.Errorf("boltstore: bucket %q: %w", cfg.bucket, err)
	}
	go s.cleaner(cfg.cleanup)
	go s.writer()
	return s, nil
}

// createLayout creates the store's bucket with its records and expiry
// buckets, or checks that an existing bucket has this layout. An empty
// bucket is adopted.
func (s *Store) createLayout(tx *bolt.Tx) error {
	top := tx.Bucket(s.bucket)
	if top == nil {
		var err error
		if top, err = tx.CreateBucket(s.bucket); err != nil {
			return err
		}
	}
	switch v := top.Get(layoutKey); {
	case bytes.Equal(v, layoutVersion):
	case v == nil && isEmpty(top):
		if err := top.Put(layoutKey, layoutVersion); err != nil {
			return err
		}
	case v == nil:
		return layoutMismatch("it holds entries but no layout marker (a file written before the nested layout, or another program's bucket)")
	default:
		return layoutMismatch(fmt.Sprintf("layout %q, this version reads %q", v, layoutVersion))
	}
	for _, name := range [][]byte{recordsName, expiryName} {
		if _, err := top.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// layoutMismatch is why an existing bucket is not in this store's layout.
type layoutMismatch string

func (l layoutMismatch) Error() string { return string(l) }

func isEmpty(b *bolt.Bucket) bool {
	k, _ := b.Cursor().First()
	return k == nil
}

// records and expiry return the store's two buckets in tx.
func (s *Store) records(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(s.bucket).Bucket(recordsName) }
func (s *Store) expiry(tx *bolt.Tx) *bolt.Bucket  { return tx.Bucket(s.bucket).Bucket(expiryName) }

// write runs fn in a write transaction shared with the other writes queued
// meanwhile. The caller holds s.mu shared, so the writer is running.
func (s *Store) write(fn func(*bolt.Tx) error) error {
	req := writeReq{fn: fn, done: make(chan error, 1)}
	s.writes <- req
	return <-req.done
}

func (s *Store) writer() {
	defer close(s.writerDone)
	group := make([]writeReq, 0, maxGroup)
	for {
		select {
		case <-s.stop:
			return
		case r := <-s.writes:
			group = append(group[:0], r)
		}
	more:
		for len(group) < maxGroup {
			select {
			case r := <-s.writes:
				group = append(group, r)
			default:
				break more
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range group {
				if err := r.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || len(group) == 1 {
			for _, r := range group {
				r.done <- err
			}
			continue
		}
		// One write failed and rolled back the group: run each alone so
		// only the failing one reports an error.
		for _, r := range group {
			r.done <- s.db.Update(r.fn)
		}
	}
}

// recordKey is the 16 message-ID bytes followed by the scope (which cannot
// contain NUL, but needs no separator after a fixed-length prefix).
func recordKey(k dedupe.Key) []byte {
	b := make([]byte, 16+len(k.Scope))
	copy(b, k.ID[:])
	copy(b[16:], k.Scope)
	return b
}

func expiryKey(until int64, rk []byte) []byte {
	b := make([]byte, 8+len(rk))
	binary.BigEndian.PutUint64(b, uint64(until))
	copy(b[8:], rk)
	return b
}

type record struct {
	state byte
	token uint64
	until int64 // Unix ns; 0 for a key kept forever
}

func decode(v []byte) (record, error) {
	if len(v) != recordLen {
		return record{}, fmt.Errorf("corrupt record of %d bytes", len(v))
	}
	return record{state: v[0], token: binary.BigEndian.Uint64(v[1:]), until: int64(binary.BigEndian.Uint64(v[9:]))}, nil
}

func (r record) encode() []byte {
	b := make([]byte, recordLen)
	b[0] = r.state
	binary.BigEndian.PutUint64(b[1:], r.token)
	binary.BigEndian.PutUint64(b[9:], uint64(r.until))
	return b
}

func (r record) expired(now int64) bool { return r.until != 0 && now >= r.until }

// begin checks the store and ctx before a call; on success the caller must
// call s.mu.RUnlock.
func (s *Store) begin(ctx context.Context, op string, k dedupe.Key) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("boltstore: %s %s: %w", op, k, dedupe.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		s.mu.RUnlock()
		return fmt.Errorf("boltstore: %s %s: %w", op, k, err)
	}
	return nil
}

// Claim implements [dedupe.Store.Claim].
func (s *Store) Claim(ctx context.Context, key dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Claim{}, fmt.Errorf("boltstore: claim: %w", err)
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.lease)
	if err != nil {
		return dedupe.Claim{}, fmt.Errorf("boltstore: claim %s: %w", key, err)
	}
	if err := s.begin(ctx, "claim", key); err != nil {
		return dedupe.Claim{}, err
	}
	defer s.mu.RUnlock()
	rk := recordKey(key)

	// Most redeliveries are duplicates or in flight: answer them with a read.
	var c dedupe.Claim
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		c, err = s.peek(tx, key, rk, time.Now().UnixNano())
		return err
	})
	if err != nil || c.Status != 0 {
		return c, s.wrap("claim", key, err)
	}

	err = s.write(func(tx *bolt.Tx) error {
		var err error
		c, err = s.claimTx(tx, key, rk, time.Now().UnixNano(), lease)
		return err
	})
	if err != nil {
		return dedupe.Claim{}, s.wrap("claim", key, err)
	}
	return c, nil
}

// claimTx claims key (record key rk) in the write transaction tx.
func (s *Store) claimTx(tx *bolt.Tx, key dedupe.Key, rk []byte, now int64, lease time.Duration) (dedupe.Claim, error) {
	if c, err := s.peek(tx, key, rk, now); err != nil || c.Status != 0 {
		return c, err
	}
	b := s.records(tx)
	if old := b.Get(rk); old != nil { // expired: take it over
		r, err := decode(old)
		if err != nil {
			return dedupe.Claim{}, err
		}
		if err := s.expiry(tx).Delete(expiryKey(r.until, rk)); err != nil {
			return dedupe.Claim{}, err
		}
	}
	token, err := b.NextSequence()
	if err != nil {
		return dedupe.Claim{}, err
	}
	r := record{state: stateLease, token: token, until: addSat(now, lease)}
	if err := b.Put(rk, r.encode()); err != nil {
		return dedupe.Claim{}, err
	}
	if err := s.expiry(tx).Put(expiryKey(r.until, rk), nil); err != nil {
		return dedupe.Claim{}, err
	}
	return dedupe.Claim{Key: key, Status: dedupe.Acquired, Token: token, Until: time.Unix(0, r.until)}, nil
}

// peek returns the claim for a key that cannot be acquired now (Duplicate or
// InFlight), or a zero Claim when it can.
func (s *Store) peek(tx *bolt.Tx, key dedupe.Key, rk []byte, now int64) (dedupe.Claim, error) {
	v := s.records(tx).Get(rk)
	if v == nil {
		return dedupe.Claim{}, nil
	}
	r, err := decode(v)
	if err != nil {
		return dedupe.Claim{}, err
	}
	if r.expired(now) {
		return dedupe.Claim{}, nil
	}
	switch r.state {
	case stateDone:
		c := dedupe.Claim{Key: key, Status: dedupe.Duplicate}
		if r.until != 0 {
			c.Until = time.Unix(0, r.until)
		}
		return c, nil
	case stateLease:
		return dedupe.Claim{Key: key, Status: dedupe.InFlight, Until: time.Unix(0, r.until)}, nil
	}
	return dedupe.Claim{}, fmt.Errorf("corrupt record state %d", r.state)
}

// Complete implements [dedupe.Store.Complete].
func (s *Store) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("boltstore: complete %s: %w", c.Key, err)
	}
	retention, err := dedupe.RetentionOrDefault(retention, s.retention)
	if err != nil {
		return fmt.Errorf("boltstore: complete %s: %w", c.Key, err)
	}
	return s.finish(ctx, "complete", c, s.completeTx(retention))
}

// Release implements [dedupe.Store.Release].
func (s *Store) Release(ctx context.Context, c dedupe.Claim) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("boltstore: release %s: %w", c.Key, err)
	}
	return s.finish(ctx, "release", c, s.releaseTx)
}

// finishWrite is what Complete or Release writes for a claim that still
// holds its lease, after its expiry entry is removed.
type finishWrite func(tx *bolt.Tx, rk []byte, c dedupe.Claim) error

func (s *Store) completeTx(retention time.Duration) finishWrite {
	return func(tx *bolt.Tx, rk []byte, c dedupe.Claim) error {
		r := record{state: stateDone, token: c.Token}
		if retention != dedupe.Forever {
			r.until = addSat(time.Now().UnixNano(), retention)
			if err := s.expiry(tx).Put(expiryKey(r.until, rk), nil); err != nil {
				return err
			}
		}
		return s.records(tx).Put(rk, r.encode())
	}
}

func (s *Store) releaseTx(tx *bolt.Tx, rk []byte, _ dedupe.Claim) error {
	return s.records(tx).Delete(rk)
}

// finish checks in one write transaction that c still holds its lease,
// removes the lease's expiry entry and calls write.
func (s *Store) finish(ctx context.Context, op string, c dedupe.Claim, write finishWrite) error {
	if err := s.begin(ctx, op, c.Key); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	rk := recordKey(c.Key)
	lost := false
	err := s.write(func(tx *bolt.Tx) error {
		var err error
		lost, err = s.finishTx(tx, rk, c, write)
		return err
	})
	if err != nil {
		return s.wrap(op, c.Key, err)
	}
	if lost {
		return lostError(op, c)
	}
	return nil
}

func lostError(op string, c dedupe.Claim) error {
	return fmt.Errorf("boltstore: %s %s token %d: %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
}

// finishTx is finish's work in tx; lost reports a claim whose lease is
// gone (nothing written).
func (s *Store) finishTx(tx *bolt.Tx, rk []byte, c dedupe.Claim, write finishWrite) (lost bool, err error) {
	v := s.records(tx).Get(rk)
	if v == nil {
		return true, nil
	}
	r, err := decode(v)
	if err != nil {
		return false, err
	}
	if r.state != stateLease || r.token != c.Token {
		return true, nil
	}
	if err := s.expiry(tx).Delete(expiryKey(r.until, rk)); err != nil {
		return false, err
	}
	return false, write(tx, rk, c)
}

// ClaimBatch implements [dedupe.BatchStore.ClaimBatch]: one read
// transaction answers a batch with nothing to acquire; otherwise one write
// transaction (shared with other writers by group commit) claims every key
// in order, so a failed call has taken nothing.
func (s *Store) ClaimBatch(ctx context.Context, keys []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("boltstore: claim batch: key %d: %w", i, err)
		}
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.lease)
	if err != nil {
		return nil, fmt.Errorf("boltstore: claim batch: %w", err)
	}
	if err := s.beginBatch(ctx, "claim"); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	claims := make([]dedupe.Claim, len(keys))
	if len(keys) == 0 {
		return claims, nil
	}
	rks := make([][]byte, len(keys))
	for i, k := range keys {
		rks[i] = recordKey(k)
	}
	write := false
	err = s.db.View(func(tx *bolt.Tx) error {
		now := time.Now().UnixNano()
		for i, k := range keys {
			c, err := s.peek(tx, k, rks[i], now)
			if err != nil {
				return fmt.Errorf("key %d %s: %w", i, k, err)
			}
			write = write || c.Status == 0
			claims[i] = c
		}
		return nil
	})
	if err != nil {
		return nil, s.wrapBatch("claim", err)
	}
	if !write {
		return claims, nil
	}
	err = s.write(func(tx *bolt.Tx) error {
		now := time.Now().UnixNano()
		for i, k := range keys {
			c, err := s.claimTx(tx, k, rks[i], now, lease)
			if err != nil {
				return fmt.Errorf("key %d %s: %w", i, k, err)
			}
			claims[i] = c
		}
		return nil
	})
	if err != nil {
		return nil, s.wrapBatch("claim", err)
	}
	return claims, nil
}

// CompleteBatch implements [dedupe.BatchStore.CompleteBatch] in one write
// transaction.
func (s *Store) CompleteBatch(ctx context.Context, claims []dedupe.Claim, retention time.Duration) ([]error, error) {
	retention, err := dedupe.RetentionOrDefault(retention, s.retention)
	if err != nil {
		return nil, fmt.Errorf("boltstore: complete batch: %w", err)
	}
	return s.finishBatch(ctx, "complete", claims, s.completeTx(retention))
}

// ReleaseBatch implements [dedupe.BatchStore.ReleaseBatch] in one write
// transaction.
func (s *Store) ReleaseBatch(ctx context.Context, claims []dedupe.Claim) ([]error, error) {
	return s.finishBatch(ctx, "release", claims, s.releaseTx)
}

func (s *Store) finishBatch(ctx context.Context, op string, claims []dedupe.Claim, write finishWrite) ([]error, error) {
	if err := s.beginBatch(ctx, op); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	errs := make([]error, len(claims))
	rks := make([][]byte, len(claims))
	todo := 0
	for i, c := range claims {
		if err := dedupe.CheckClaim(c); err != nil {
			errs[i] = fmt.Errorf("boltstore: %s %s: %w", op, c.Key, err)
			continue
		}
		rks[i] = recordKey(c.Key)
		todo++
	}
	if todo == 0 {
		return errs, nil
	}
	lost := make([]bool, len(claims))
	err := s.write(func(tx *bolt.Tx) error {
		for i, c := range claims {
			if rks[i] == nil {
				continue
			}
			var err error
			if lost[i], err = s.finishTx(tx, rks[i], c, write); err != nil {
				return fmt.Errorf("%s: %w", c.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.wrapBatch(op, err)
	}
	for i, c := range claims {
		if lost[i] {
			errs[i] = lostError(op, c)
		}
	}
	return errs, nil
}

// beginBatch is begin for a batch call.
func (s *Store) beginBatch(ctx context.Context, op string) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("boltstore: %s batch: %w", op, dedupe.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		s.mu.RUnlock()
		return fmt.Errorf("boltstore: %s batch: %w", op, err)
	}
	return nil
}

func (s *Store) wrapBatch(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("boltstore: %s batch: %w: %w", op, dedupe.ErrClosed, err)
	}
	return fmt.Errorf("boltstore: %s batch: %w", op, err)
}

func (s *Store) wrap(op string, k dedupe.Key, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("boltstore: %s %s: %w: %w", op, k, dedupe.ErrClosed, err)
	}
	return fmt.Errorf("boltstore: %s %s: %w", op, k, err)
}

// Len returns the number of keys in the store: leases and completed keys,
// including expired ones not yet cleaned up.
func (s *Store) Len() (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, fmt.Errorf("boltstore: len: %w", dedupe.ErrClosed)
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = s.records(tx).Stats().KeyN
		return nil
	})
	return n, err
}

// Cleanup deletes the entries whose lease or retention has ended, in
// transactions of at most the cleanup batch size so that claims are never
// held up for long, and returns how many it deleted. The store runs it every
// cleanup interval; call it to clean up now.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.cleanupBatch(ctx)
		total += n
		if err != nil || n < s.batch {
			return total, err
		}
	}
}

func (s *Store) cleanupBatch(ctx context.Context) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, fmt.Errorf("boltstore: cleanup: %w", dedupe.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("boltstore: cleanup: %w", err)
	}
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		now := time.Now().UnixNano()
		b, exp := s.records(tx), s.expiry(tx)
		cur := exp.Cursor()
		var stale [][]byte
		for k, _ := cur.First(); k != nil && n < s.batch; k, _ = cur.Next() {
			if int64(binary.BigEndian.Uint64(k[:8])) > now {
				break
			}
			stale = append(stale, bytes.Clone(k))
			n++
		}
		for _, k := range stale {
			until, rk := int64(binary.BigEndian.Uint64(k[:8])), k[8:]
			if v := b.Get(rk); v != nil {
				if r, err := decode(v); err == nil && r.until == until {
					if err := b.Delete(rk); err != nil {
						return err
					}
				}
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: cleanup: %w", err)
	}
	return n, nil
}

func (s *Store) cleaner(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failure is retried at the next tick; entries stay until then.
			_, _ = s.Cleanup(ctx)
		}
	}
}

// DefaultLease returns the lease Claim uses when given 0 ([WithDefaultLease]).
func (s *Store) DefaultLease() time.Duration { return s.lease }

// Close stops the cleanup goroutine and, for a store from [Open], closes the
// file. Calls after Close return [dedupe.ErrClosed]. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	<-s.writerDone
	if s.owned {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("boltstore: close: %w", err)
		}
	}
	return nil
}

// addSat returns t+d, saturating instead of overflowing for huge durations.
func addSat(t int64, d time.Duration) int64 {
	if int64(d) > math.MaxInt64-t {
		return math.MaxInt64
	}
	return t + int64(d)
}
