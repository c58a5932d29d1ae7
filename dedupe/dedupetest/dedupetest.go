package dedupetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// Options describes the store under test. Only NewStore is required.
type Options struct {
	// NewStore returns a store for one sub-test. Each call may return a new
	// store or share one: every sub-test uses fresh random message IDs, so
	// keys never collide. Register any cleanup (closing the store, dropping a
	// table) with t.Cleanup. Required.
	NewStore func(t *testing.T) dedupe.Store

	// Broken returns a store whose backend cannot answer: a closed store or
	// client, or a server address nothing listens on. Every call on it must
	// return an error (never Acquired, never Duplicate) within a few seconds.
	// nil leaves those checks out.
	Broken func(t *testing.T) dedupe.Store

	// Forever reports that the store keeps keys completed with
	// dedupe.Forever. When false, Complete with dedupe.Forever must return an
	// error wrapping dedupe.ErrUnsupported and leave the claim held.
	Forever bool

	// MinLease is the smallest lease and retention the store honours exactly
	// (its time granularity: 1ms for Redis PX and PostgreSQL, a second for a
	// store that rounds to seconds). The suite's time unit is
	// max(200ms, MinLease): short leases are 3 units, waits a few units, and
	// a check that must happen before a short lease ends has 3 units to run
	// (room for a loaded machine under -race). Zero means 1ms.
	MinLease time.Duration

	// InboxWrite, when set, enables the transactional-inbox cases: the store
	// must implement dedupe.Inbox. It is called inside the fn given to
	// Inbox.Process, with Process's context (which carries the store's
	// transaction), and must write one row identified by key inside that
	// transaction (for pgstore: tx, _ := pgstore.TxFromContext(ctx);
	// tx.Exec(ctx, "INSERT ...", key.ID)).
	InboxWrite func(ctx context.Context, t *testing.T, key dedupe.Key) error

	// InboxHasRow reports whether the row InboxWrite wrote for key is
	// committed, reading outside any transaction. Required with InboxWrite.
	InboxHasRow func(t *testing.T, key dedupe.Key) bool

	// InboxFailCommit, when set with InboxWrite, is called like InboxWrite
	// and must write something, without an error, that makes the
	// transaction's commit fail (for pgstore: a row violating a DEFERRABLE
	// INITIALLY DEFERRED foreign key). It enables the cases where a commit
	// fails because of the handler's writes: Process must then return an
	// error wrapping dedupe.ErrRolledBack and commit nothing.
	InboxFailCommit func(ctx context.Context, t *testing.T, key dedupe.Key) error

	// ErrorPrefix, when set, is what every error of the store starts with,
	// once: its package name and ": " ("mystore: "), however many layers of
	// its own it wraps. The suite checks the errors its cases provoke.
	ErrorPrefix string

	// Serial runs the sub-tests one after another instead of in parallel
	// (for stores that cannot be shared by concurrent tests).
	Serial bool
}

// Run runs the conformance suite on the store described by opts. Each case is
// a sub-test of t; several wait for leases and retentions of about a second,
// so they run in parallel unless opts.Serial (then the suite takes ~10 s).
func Run(t *testing.T, opts Options) {
	t.Helper()
	if opts.NewStore == nil {
		t.Fatal("dedupetest: Options.NewStore is required")
	}
	if opts.InboxWrite != nil && opts.InboxHasRow == nil {
		t.Fatal("dedupetest: Options.InboxHasRow is required with InboxWrite")
	}
	s := &suite{opts: opts, unit: 200 * time.Millisecond}
	if opts.MinLease > s.unit {
		s.unit = opts.MinLease
	}
	// Cases that need an option the caller did not give (Broken, InboxWrite)
	// are not registered at all, so a store that is not an inbox reports no
	// skipped tests.
	type testCase struct {
		name string
		fn   func(t *testing.T)
	}
	cases := []testCase{
		{"InvalidInput", s.invalidInput},
		{"AcquireThenInFlight", s.acquireThenInFlight},
		{"ConcurrentClaims", s.concurrentClaims},
		{"ProcessOnce", s.processOnce},
		{"CompleteThenDuplicate", s.completeThenDuplicate},
		{"RetentionEnds", s.retentionEnds},
		{"Forever", s.forever},
		{"LongDurations", s.longDurations},
		{"ReleaseThenAcquire", s.releaseThenAcquire},
		{"LeaseExpiry", s.leaseExpiry},
		{"TokensGrow", s.tokensGrow},
		{"ScopesIndependent", s.scopesIndependent},
		{"NotAcquired", s.notAcquired},
		{"ReleaseAfterComplete", s.releaseAfterComplete},
		{"CancelledContext", s.cancelledContext},
	}
	if opts.Broken != nil {
		cases = append(cases, testCase{"Broken", s.broken})
	}
	if opts.InboxWrite != nil {
		cases = append(cases, []testCase{
			{"InboxCommit", s.inboxCommit},
			{"InboxRollback", s.inboxRollback},
			{"InboxInFlight", s.inboxInFlight},
			{"InboxLeaseLost", s.inboxLeaseLost},
			{"InboxCancelledContext", s.inboxCancelled},
		}...)
		if opts.InboxFailCommit != nil {
			cases = append(cases, testCase{"InboxCommitFailure", s.inboxCommitFailure})
		}
	}
	// The batch cases run when the store implements the batch interfaces;
	// a store from NewStore tells.
	probe := opts.NewStore(t)
	if _, ok := probe.(dedupe.BatchStore); ok {
		cases = append(cases, []testCase{
			{"BatchClaim", s.batchClaim},
			{"BatchFinish", s.batchFinish},
			{"BatchInvalidInput", s.batchInvalid},
			{"BatchConcurrent", s.batchConcurrent},
		}...)
	}
	if _, ok := probe.(dedupe.Admin); ok {
		cases = append(cases, []testCase{
			{"AdminInspect", s.adminInspect},
			{"AdminForgetDone", s.adminForgetDone},
			{"AdminForgetLease", s.adminForgetLease},
			{"AdminForgetEnded", s.adminForgetEnded},
			{"AdminTokensGrow", s.adminTokensGrow},
			{"AdminInvalidInput", s.adminInvalid},
		}...)
		if opts.InboxWrite != nil {
			cases = append(cases, testCase{"AdminForgetInbox", s.adminForgetInbox})
		}
	}
	if _, ok := probe.(dedupe.BatchInbox); ok && opts.InboxWrite != nil {
		cases = append(cases, []testCase{
			{"InboxBatchCommit", s.inboxBatchCommit},
			{"InboxBatchMemberFails", s.inboxBatchMemberFails},
			{"InboxBatchPanic", s.inboxBatchPanic},
			{"InboxBatchLeaseLost", s.inboxBatchLeaseLost},
			{"InboxBatchInvalidInput", s.inboxBatchInvalid},
		}...)
		if opts.InboxFailCommit != nil {
			cases = append(cases, testCase{"InboxBatchCommitFailure", s.inboxBatchCommitFailure})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !opts.Serial {
				t.Parallel()
			}
			c.fn(t)
		})
	}
}

type suite struct {
	opts Options
	unit time.Duration
}

const (
	scope     = "dedupetest"
	longLease = time.Minute
	// callTimeout bounds every call, so a hanging store fails instead of
	// stalling the run.
	callTimeout = 10 * time.Second
)

// NewKey returns a key with a fresh random message ID in the given scope.
func NewKey(scope string) dedupe.Key { return dedupe.Key{Scope: scope, ID: uuid.New()} }

func (s *suite) store(t *testing.T) dedupe.Store {
	t.Helper()
	st := s.opts.NewStore(t)
	if st == nil {
		t.Fatal("dedupetest: NewStore returned nil")
	}
	return st
}

func (s *suite) inbox(t *testing.T) dedupe.Inbox {
	t.Helper()
	st := s.store(t)
	in, ok := st.(dedupe.Inbox)
	if !ok {
		t.Fatalf("dedupetest: InboxWrite is set but %T does not implement dedupe.Inbox", st)
	}
	return in
}

func (s *suite) shortLease() time.Duration { return 3 * s.unit }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

func claim(t *testing.T, st dedupe.Store, key dedupe.Key, lease time.Duration, want dedupe.Status) dedupe.Claim {
	t.Helper()
	before := time.Now()
	c, err := st.Claim(ctx(t), key, lease)
	if err != nil {
		t.Fatalf("Claim(%s, %v): %v", key, lease, err)
	}
	if c.Status != want {
		t.Fatalf("Claim(%s, %v) = %s, want %s", key, lease, c.Status, want)
	}
	if c.Key != key {
		t.Fatalf("Claim(%s).Key = %s", key, c.Key)
	}
	switch c.Status {
	case dedupe.Acquired:
		if c.Token == 0 {
			t.Fatalf("Claim(%s): acquired with token 0", key)
		}
		// Allow a second of clock skew between a server and this process.
		if lo, hi := before.Add(lease-time.Second), time.Now().Add(lease+time.Second); c.Until.Before(lo) || c.Until.After(hi) {
			t.Fatalf("Claim(%s, %v).Until = %v, want within [%v, %v]", key, lease, c.Until, lo, hi)
		}
	default:
		if c.Token != 0 {
			t.Fatalf("Claim(%s) = %s with token %d, want 0", key, c.Status, c.Token)
		}
	}
	return c
}

func complete(t *testing.T, st dedupe.Store, c dedupe.Claim, retention time.Duration) {
	t.Helper()
	if err := st.Complete(ctx(t), c, retention); err != nil {
		t.Fatalf("Complete(%s, token %d, %v): %v", c.Key, c.Token, retention, err)
	}
}

func release(t *testing.T, st dedupe.Store, c dedupe.Claim) {
	t.Helper()
	if err := st.Release(ctx(t), c); err != nil {
		t.Fatalf("Release(%s, token %d): %v", c.Key, c.Token, err)
	}
}

func (s *suite) wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, target)
	}
	s.checkPrefix(t, what, err)
}

// wantIs is wantErr for an error that is not the store's own (a handler's).
func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

// checkPrefix checks that err's text starts with Options.ErrorPrefix, once.
func (s *suite) checkPrefix(t *testing.T, what string, err error) {
	t.Helper()
	p := s.opts.ErrorPrefix
	if p == "" || err == nil {
		return
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, p) || strings.Count(msg, strings.TrimSpace(p)) != 1 {
		t.Errorf("%s: error %q does not start with %q exactly once", what, msg, p)
	}
}

type namedKey struct {
	name string
	key  dedupe.Key
}

// invalidKeys returns one key for each way a key can be invalid.
func invalidKeys() []namedKey {
	return []namedKey{
		{"empty scope", dedupe.Key{ID: uuid.New()}},
		{"nil ID", dedupe.Key{Scope: scope}},
		{"long scope", dedupe.Key{Scope: strings.Repeat("s", dedupe.MaxScopeLen+1), ID: uuid.New()}},
		{"invalid UTF-8", dedupe.Key{Scope: "a\xffb", ID: uuid.New()}},
		{"NUL byte", dedupe.Key{Scope: "a\x00b", ID: uuid.New()}},
	}
}

func (s *suite) invalidInput(t *testing.T) {
	st := s.store(t)
	for _, b := range invalidKeys() {
		t.Run(b.name, func(t *testing.T) {
			c, err := st.Claim(ctx(t), b.key, longLease)
			s.wantErr(t, "Claim", err, dedupe.ErrInvalidKey)
			if c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
				t.Fatalf("Claim with an invalid key returned %s", c.Status)
			}
			forged := dedupe.Claim{Key: b.key, Status: dedupe.Acquired, Token: 1, Until: time.Now().Add(time.Minute)}
			s.wantErr(t, "Complete", st.Complete(ctx(t), forged, 0), dedupe.ErrInvalidKey)
			s.wantErr(t, "Release", st.Release(ctx(t), forged), dedupe.ErrInvalidKey)
		})
	}
	t.Run("longest scope", func(t *testing.T) {
		key := dedupe.Key{Scope: strings.Repeat("é", dedupe.MaxScopeLen/2), ID: uuid.New()}
		c := claim(t, st, key, longLease, dedupe.Acquired)
		complete(t, st, c, 0)
		claim(t, st, key, longLease, dedupe.Duplicate)
	})
	t.Run("negative lease", func(t *testing.T) {
		key := NewKey(scope)
		_, err := st.Claim(ctx(t), key, -time.Second)
		s.wantErr(t, "Claim with a negative lease", err, dedupe.ErrInvalidDuration)
		claim(t, st, key, longLease, dedupe.Acquired) // nothing was taken
	})
	t.Run("negative retention", func(t *testing.T) {
		key := NewKey(scope)
		c := claim(t, st, key, longLease, dedupe.Acquired)
		s.wantErr(t, "Complete with a negative retention", st.Complete(ctx(t), c, -time.Hour), dedupe.ErrInvalidDuration)
		claim(t, st, key, longLease, dedupe.InFlight) // still held
		complete(t, st, c, 0)
		claim(t, st, key, longLease, dedupe.Duplicate)
	})
	t.Run("default lease", func(t *testing.T) {
		key := NewKey(scope)
		c, err := st.Claim(ctx(t), key, 0)
		if err != nil || c.Status != dedupe.Acquired {
			t.Fatalf("Claim with lease 0 = %s, %v; want acquired with the store's default lease", c.Status, err)
		}
		if !c.Until.After(time.Now()) {
			t.Fatalf("Claim with lease 0: Until %v is not in the future", c.Until)
		}
		claim(t, st, key, longLease, dedupe.InFlight)
	})
}

func (s *suite) acquireThenInFlight(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	for range 3 {
		in := claim(t, st, key, longLease, dedupe.InFlight)
		if d := in.Until.Sub(c.Until); d < -time.Second || d > time.Second {
			t.Fatalf("InFlight.Until = %v, want the holder's lease end %v", in.Until, c.Until)
		}
	}
	complete(t, st, c, 0)
	claim(t, st, key, longLease, dedupe.Duplicate)
}

func (s *suite) concurrentClaims(t *testing.T) {
	st := s.store(t)
	const goroutines = 64
	for round := range 3 {
		key := NewKey(scope)
		var (
			start    = make(chan struct{})
			wg       sync.WaitGroup
			acquired atomic.Int32
			inFlight atomic.Int32
			errs     = make(chan error, goroutines)
			winner   atomic.Pointer[dedupe.Claim]
		)
		for range goroutines {
			wg.Go(func() {
				<-start
				c, err := st.Claim(ctx(t), key, longLease)
				switch {
				case err != nil:
					errs <- err
				case c.Status == dedupe.Acquired:
					acquired.Add(1)
					winner.Store(&c)
				case c.Status == dedupe.InFlight:
					inFlight.Add(1)
				default:
					errs <- fmt.Errorf("unexpected status %s", c.Status)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: Claim: %v", round, err)
		}
		if a, f := acquired.Load(), inFlight.Load(); a != 1 || f != goroutines-1 {
			t.Fatalf("round %d: %d goroutines claimed one key: %d acquired, %d in flight; want 1 and %d", round, goroutines, a, f, goroutines-1)
		}
		complete(t, st, *winner.Load(), 0)
		claim(t, st, key, longLease, dedupe.Duplicate)
	}
}

// processOnce runs workers that loop claim → process → complete (or retry
// while in flight) over shared keys, releasing on a simulated failure every
// few attempts; every key must be processed exactly once.
func (s *suite) processOnce(t *testing.T) {
	st := s.store(t)
	const workers, nkeys = 8, 16
	keys := make([]dedupe.Key, nkeys)
	processed := make([]atomic.Int32, nkeys)
	for i := range keys {
		keys[i] = NewKey(scope)
	}
	var (
		wg       sync.WaitGroup
		attempts atomic.Int64
	)
	for w := range workers {
		wg.Go(func() {
			for i := range keys {
				k := (i + w) % nkeys
				for {
					c, err := st.Claim(ctx(t), keys[k], longLease)
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					if c.Status == dedupe.Duplicate {
						break
					}
					if c.Status == dedupe.InFlight {
						time.Sleep(time.Millisecond)
						continue
					}
					if attempts.Add(1)%3 == 0 { // a failing handler
						if err := st.Release(ctx(t), c); err != nil {
							t.Errorf("Release: %v", err)
							return
						}
						continue
					}
					processed[k].Add(1)
					if err := st.Complete(ctx(t), c, 0); err != nil {
						t.Errorf("Complete: %v", err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	for i := range processed {
		if n := processed[i].Load(); n != 1 {
			t.Errorf("key %d processed %d times, want once", i, n)
		}
	}
}

func (s *suite) completeThenDuplicate(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	complete(t, st, c, time.Hour)
	for range 3 {
		d := claim(t, st, key, longLease, dedupe.Duplicate)
		if !d.Until.IsZero() && d.Until.Before(time.Now().Add(time.Hour-time.Minute)) {
			t.Fatalf("Duplicate.Until = %v, want about an hour from now (or zero)", d.Until)
		}
	}
	other := claim(t, st, NewKey(scope), longLease, dedupe.Acquired)
	complete(t, st, other, 0)
}

func (s *suite) retentionEnds(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	retention := 3 * s.unit
	c := claim(t, st, key, longLease, dedupe.Acquired)
	complete(t, st, c, retention)
	done := time.Now()
	claim(t, st, key, longLease, dedupe.Duplicate)
	time.Sleep(time.Until(done.Add(retention + 2*s.unit)))
	again := claim(t, st, key, longLease, dedupe.Acquired)
	if again.Token <= c.Token {
		t.Fatalf("token after retention %d, want > %d", again.Token, c.Token)
	}
	// The old claim is finished: it must not complete over the new one.
	s.wantErr(t, "Complete with the claim whose record expired", st.Complete(ctx(t), c, 0), dedupe.ErrLeaseLost)
	complete(t, st, again, 0)
	claim(t, st, key, longLease, dedupe.Duplicate)
}

func (s *suite) forever(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	if !s.opts.Forever {
		s.wantErr(t, "Complete(Forever) on a store without Forever", st.Complete(ctx(t), c, dedupe.Forever), dedupe.ErrUnsupported)
		claim(t, st, key, longLease, dedupe.InFlight)
		release(t, st, c)
		return
	}
	complete(t, st, c, dedupe.Forever)
	// A short-retention key completed at the same time expires meanwhile.
	short := NewKey(scope)
	sc := claim(t, st, short, longLease, dedupe.Acquired)
	complete(t, st, sc, s.unit)
	time.Sleep(4 * s.unit)
	claim(t, st, short, longLease, dedupe.Acquired)
	d := claim(t, st, key, longLease, dedupe.Duplicate)
	if !d.Until.IsZero() {
		t.Fatalf("Duplicate.Until = %v for a key kept forever, want the zero time", d.Until)
	}
}

// longDurations: a lease and a retention of two centuries neither overflow
// into the past nor are rejected.
func (s *suite) longDurations(t *testing.T) {
	st := s.store(t)
	const centuries = 200 * 365 * 24 * time.Hour
	key := NewKey(scope)
	c, err := st.Claim(ctx(t), key, centuries)
	if err != nil || c.Status != dedupe.Acquired {
		t.Fatalf("Claim with a %v lease = %s, %v; want acquired", centuries, c.Status, err)
	}
	if !c.Until.After(time.Now().Add(100 * 365 * 24 * time.Hour)) {
		t.Fatalf("Claim with a %v lease: Until = %v", centuries, c.Until)
	}
	claim(t, st, key, longLease, dedupe.InFlight)
	complete(t, st, c, centuries)
	claim(t, st, key, longLease, dedupe.Duplicate)
}

func (s *suite) releaseThenAcquire(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	release(t, st, c)
	again := claim(t, st, key, longLease, dedupe.Acquired)
	if again.Token <= c.Token {
		t.Fatalf("token after release %d, want > %d", again.Token, c.Token)
	}
	s.wantErr(t, "second Release of the same claim", st.Release(ctx(t), c), dedupe.ErrLeaseLost)
	s.wantErr(t, "Complete after Release", st.Complete(ctx(t), c, 0), dedupe.ErrLeaseLost)
	claim(t, st, key, longLease, dedupe.InFlight) // the new holder is untouched
	complete(t, st, again, 0)
	claim(t, st, key, longLease, dedupe.Duplicate)
}

func (s *suite) leaseExpiry(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	lease := s.shortLease()
	first := claim(t, st, key, lease, dedupe.Acquired)
	claim(t, st, key, longLease, dedupe.InFlight)
	time.Sleep(time.Until(first.Until.Add(2 * s.unit)))
	second := claim(t, st, key, longLease, dedupe.Acquired)
	if second.Token <= first.Token {
		t.Fatalf("token after expiry %d, want > %d", second.Token, first.Token)
	}
	s.wantErr(t, "Complete by the holder whose lease expired", st.Complete(ctx(t), first, 0), dedupe.ErrLeaseLost)
	s.wantErr(t, "Release by the holder whose lease expired", st.Release(ctx(t), first), dedupe.ErrLeaseLost)
	claim(t, st, key, longLease, dedupe.InFlight) // the stale calls changed nothing
	complete(t, st, second, 0)
	claim(t, st, key, longLease, dedupe.Duplicate)
	s.wantErr(t, "Complete by the old holder after the new one completed", st.Complete(ctx(t), first, 0), dedupe.ErrLeaseLost)
}

func (s *suite) tokensGrow(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	var last uint64
	for i := range 10 {
		c := claim(t, st, key, longLease, dedupe.Acquired)
		if c.Token <= last {
			t.Fatalf("acquisition %d: token %d, want > %d", i, c.Token, last)
		}
		last = c.Token
		release(t, st, c)
	}
}

func (s *suite) scopesIndependent(t *testing.T) {
	st := s.store(t)
	id := uuid.New()
	a := dedupe.Key{Scope: scope + "-a", ID: id}
	b := dedupe.Key{Scope: scope + "-b", ID: id}
	ca := claim(t, st, a, longLease, dedupe.Acquired)
	cb := claim(t, st, b, longLease, dedupe.Acquired)
	complete(t, st, ca, 0)
	claim(t, st, a, longLease, dedupe.Duplicate)
	claim(t, st, b, longLease, dedupe.InFlight)
	release(t, st, cb)
	claim(t, st, b, longLease, dedupe.Acquired)
	// Same scope, another ID: independent too.
	claim(t, st, dedupe.Key{Scope: a.Scope, ID: uuid.New()}, longLease, dedupe.Acquired)
}

func (s *suite) notAcquired(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	s.wantErr(t, "Complete(zero Claim)", st.Complete(ctx(t), dedupe.Claim{}, 0), dedupe.ErrNotAcquired)
	s.wantErr(t, "Release(zero Claim)", st.Release(ctx(t), dedupe.Claim{}), dedupe.ErrNotAcquired)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	in := claim(t, st, key, longLease, dedupe.InFlight)
	s.wantErr(t, "Complete(in-flight claim)", st.Complete(ctx(t), in, 0), dedupe.ErrNotAcquired)
	s.wantErr(t, "Release(in-flight claim)", st.Release(ctx(t), in), dedupe.ErrNotAcquired)
	claim(t, st, key, longLease, dedupe.InFlight)
	complete(t, st, c, 0)
	d := claim(t, st, key, longLease, dedupe.Duplicate)
	s.wantErr(t, "Complete(duplicate claim)", st.Complete(ctx(t), d, 0), dedupe.ErrNotAcquired)
	s.wantErr(t, "Release(duplicate claim)", st.Release(ctx(t), d), dedupe.ErrNotAcquired)
	claim(t, st, key, longLease, dedupe.Duplicate)
	// A token that was never issued for a key with no record.
	forged := dedupe.Claim{Key: NewKey(scope), Status: dedupe.Acquired, Token: 1 << 62, Until: time.Now().Add(time.Minute)}
	s.wantErr(t, "Complete(never claimed)", st.Complete(ctx(t), forged, 0), dedupe.ErrLeaseLost)
	s.wantErr(t, "Release(never claimed)", st.Release(ctx(t), forged), dedupe.ErrLeaseLost)
	claim(t, st, forged.Key, longLease, dedupe.Acquired)
}

func (s *suite) releaseAfterComplete(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	c := claim(t, st, key, longLease, dedupe.Acquired)
	complete(t, st, c, 0)
	s.wantErr(t, "Release after Complete", st.Release(ctx(t), c), dedupe.ErrLeaseLost)
	claim(t, st, key, longLease, dedupe.Duplicate) // still done
}

func (s *suite) cancelledContext(t *testing.T) {
	st := s.store(t)
	key := NewKey(scope)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	c, err := st.Claim(cancelled, key, longLease)
	s.wantErr(t, "Claim(cancelled context)", err, context.Canceled)
	if c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
		t.Fatalf("Claim(cancelled context) returned %s", c.Status)
	}
	c = claim(t, st, key, longLease, dedupe.Acquired) // nothing was taken

	s.wantErr(t, "Complete(cancelled context)", st.Complete(cancelled, c, 0), context.Canceled)
	s.wantErr(t, "Release(cancelled context)", st.Release(cancelled, c), context.Canceled)
	claim(t, st, key, longLease, dedupe.InFlight) // still held
	complete(t, st, c, 0)
	claim(t, st, key, longLease, dedupe.Duplicate)
}

func (s *suite) broken(t *testing.T) {
	st := s.opts.Broken(t)
	key := NewKey(scope)
	call := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err := f(c)
		if err == nil {
			t.Errorf("%s on a broken store: nil error", what)
		}
		s.checkPrefix(t, what+" on a broken store", err)
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("%s on a broken store took %v", what, d)
		}
	}
	call("Claim", func(ctx context.Context) error {
		c, err := st.Claim(ctx, key, longLease)
		if c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
			t.Errorf("Claim on a broken store returned %s", c.Status)
		}
		return err
	})
	forged := dedupe.Claim{Key: key, Status: dedupe.Acquired, Token: 1, Until: time.Now().Add(time.Minute)}
	call("Complete", func(ctx context.Context) error { return st.Complete(ctx, forged, 0) })
	call("Release", func(ctx context.Context) error { return st.Release(ctx, forged) })
	if bs, ok := st.(dedupe.BatchStore); ok {
		s.brokenBatch(t, bs, call)
	}
	if ad, ok := st.(dedupe.Admin); ok {
		s.brokenAdmin(t, ad, key, call)
	}
	if in, ok := st.(dedupe.Inbox); ok {
		call("Process", func(ctx context.Context) error {
			ran := false
			c, err := in.Process(ctx, key, longLease, 0, func(context.Context) error { ran = true; return nil })
			if ran || c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
				t.Errorf("Process on a broken store: status %s, fn ran %v", c.Status, ran)
			}
			return err
		})
	}
}

var errHandler = errors.New("dedupetest: handler failed")

func (s *suite) inboxCommit(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	calls := 0
	before := time.Now()
	c, err := in.Process(ctx(t), key, longLease, 0, func(ctx context.Context) error {
		calls++
		return s.opts.InboxWrite(ctx, t, key)
	})
	if err != nil || c.Status != dedupe.Acquired || calls != 1 {
		t.Fatalf("Process = %s, %v after %d handler calls; want acquired, nil, 1", c.Status, err, calls)
	}
	if c.Key != key || c.Token == 0 || c.Until.Before(before.Add(longLease-time.Second)) {
		t.Fatalf("Process returned the claim %+v, want key %s, a token and the lease end", c, key)
	}
	if !s.opts.InboxHasRow(t, key) {
		t.Fatal("the handler's write is absent after Process committed")
	}
	claim(t, st(in), key, longLease, dedupe.Duplicate)
	d, err := in.Process(ctx(t), key, longLease, 0, func(context.Context) error {
		calls++
		return nil
	})
	if err != nil || d.Status != dedupe.Duplicate || calls != 1 {
		t.Fatalf("second Process = %s, %v, handler calls %d; want duplicate, nil, handler not called", d.Status, err, calls)
	}
	if d.Key != key || d.Token != 0 {
		t.Fatalf("second Process returned %+v, want the duplicate claim of %s", d, key)
	}
}

func st(in dedupe.Inbox) dedupe.Store { return in }

func (s *suite) inboxRollback(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	c, err := in.Process(ctx(t), key, longLease, 0, func(ctx context.Context) error {
		if err := s.opts.InboxWrite(ctx, t, key); err != nil {
			return err
		}
		return errHandler
	})
	wantIs(t, "Process with a failing handler", err, errHandler)
	if errors.Is(err, dedupe.ErrRolledBack) {
		t.Fatalf("Process with a failing handler: %v; fn's own error must be returned as it is", err)
	}
	if c.Status == dedupe.Duplicate {
		t.Fatalf("Process with a failing handler returned %s", c.Status)
	}
	if s.opts.InboxHasRow(t, key) {
		t.Fatal("the failing handler's write was committed")
	}
	// The claim was released: the redelivery acquires at once.
	again := claim(t, st(in), key, longLease, dedupe.Acquired)
	release(t, st(in), again)
	c, err = in.Process(ctx(t), key, longLease, 0, func(ctx context.Context) error {
		return s.opts.InboxWrite(ctx, t, key)
	})
	if err != nil || c.Status != dedupe.Acquired {
		t.Fatalf("Process after the rollback = %s, %v; want acquired", c.Status, err)
	}
	if !s.opts.InboxHasRow(t, key) {
		t.Fatal("the retried handler's write is absent")
	}
}

// inboxCommitFailure: fn returns nil but its write makes the commit fail:
// the error wraps ErrRolledBack, nothing is written, the claim is released.
func (s *suite) inboxCommitFailure(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	calls := 0
	c, err := in.Process(ctx(t), key, longLease, 0, func(ctx context.Context) error {
		calls++
		if err := s.opts.InboxWrite(ctx, t, key); err != nil {
			return err
		}
		return s.opts.InboxFailCommit(ctx, t, key)
	})
	s.wantErr(t, "Process whose commit fails", err, dedupe.ErrRolledBack)
	if calls != 1 || c.Status == dedupe.Duplicate {
		t.Fatalf("Process whose commit fails = %s after %d handler calls", c.Status, calls)
	}
	if s.opts.InboxHasRow(t, key) {
		t.Fatal("a transaction whose commit failed left the handler's write")
	}
	claim(t, st(in), key, longLease, dedupe.Acquired) // released
}

func (s *suite) inboxInFlight(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	held := claim(t, st(in), key, longLease, dedupe.Acquired)
	c, err := in.Process(ctx(t), key, longLease, 0, func(context.Context) error {
		t.Error("handler called while another holder has the lease")
		return nil
	})
	if err != nil || c.Status != dedupe.InFlight {
		t.Fatalf("Process on a held key = %s, %v; want in flight, nil", c.Status, err)
	}
	if d := c.Until.Sub(held.Until); d < -time.Second || d > time.Second {
		t.Fatalf("Process on a held key: Until = %v, want the holder's lease end %v", c.Until, held.Until)
	}
	complete(t, st(in), held, 0)
}

func (s *suite) inboxLeaseLost(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	lease := s.shortLease()
	var taker dedupe.Claim
	c, err := in.Process(ctx(t), key, lease, 0, func(ctx context.Context) error {
		if err := s.opts.InboxWrite(ctx, t, key); err != nil {
			return err
		}
		time.Sleep(lease + 2*s.unit)
		// Another consumer takes the expired lease while this handler's
		// transaction is still open: that must not block.
		c, err := in.Claim(context.Background(), key, longLease)
		if err != nil || c.Status != dedupe.Acquired {
			t.Errorf("Claim of an expired lease during Process = %s, %v; want acquired", c.Status, err)
		}
		taker = c
		return nil
	})
	s.wantErr(t, "Process whose lease was lost", err, dedupe.ErrLeaseLost)
	if c.Status == dedupe.Duplicate {
		t.Fatalf("Process whose lease was lost returned %s", c.Status)
	}
	if s.opts.InboxHasRow(t, key) {
		t.Fatal("a handler whose lease was lost committed its write")
	}
	if taker.Status == dedupe.Acquired {
		claim(t, st(in), key, longLease, dedupe.InFlight)
		complete(t, st(in), taker, 0)
		claim(t, st(in), key, longLease, dedupe.Duplicate)
	}
}

func (s *suite) inboxCancelled(t *testing.T) {
	in := s.inbox(t)
	key := NewKey(scope)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := in.Process(cancelled, key, longLease, 0, func(context.Context) error {
		t.Error("handler called with a cancelled context")
		return nil
	})
	s.wantErr(t, "Process(cancelled context)", err, context.Canceled)
	if c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
		t.Fatalf("Process(cancelled context) returned %s", c.Status)
	}
	claim(t, st(in), key, longLease, dedupe.Acquired)
}
