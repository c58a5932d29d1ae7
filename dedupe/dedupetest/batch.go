package dedupetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// The batch cases check a dedupe.BatchStore key by key against the
// single-key methods, and a dedupe.BatchInbox against dedupe.Inbox.

func (s *suite) batchStore(t *testing.T) dedupe.BatchStore {
	t.Helper()
	st := s.store(t)
	bs, ok := st.(dedupe.BatchStore)
	if !ok {
		t.Fatalf("dedupetest: %T does not implement dedupe.BatchStore", st)
	}
	return bs
}

func (s *suite) batchInbox(t *testing.T) dedupe.BatchInbox {
	t.Helper()
	st := s.store(t)
	bi, ok := st.(dedupe.BatchInbox)
	if !ok {
		t.Fatalf("dedupetest: %T does not implement dedupe.BatchInbox", st)
	}
	return bi
}

func (s *suite) claimBatch(t *testing.T, bs dedupe.BatchStore, keys []dedupe.Key, lease time.Duration) []dedupe.Claim {
	t.Helper()
	claims, err := bs.ClaimBatch(ctx(t), keys, lease)
	if err != nil {
		t.Fatalf("ClaimBatch(%d keys): %v", len(keys), err)
	}
	if len(claims) != len(keys) {
		t.Fatalf("ClaimBatch(%d keys) returned %d claims", len(keys), len(claims))
	}
	for i, c := range claims {
		if c.Key != keys[i] {
			t.Fatalf("ClaimBatch: claim %d is for %s, want %s", i, c.Key, keys[i])
		}
		if (c.Status == dedupe.Acquired) != (c.Token != 0) {
			t.Fatalf("ClaimBatch: claim %d is %s with token %d", i, c.Status, c.Token)
		}
	}
	return claims
}

// wantErrs checks per-claim results: errs[i] must wrap want[i] (nil: no error).
func (s *suite) wantErrs(t *testing.T, what string, errs []error, err error, want []error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: the call failed as a whole: %v", what, err)
	}
	if len(errs) != len(want) {
		t.Fatalf("%s: %d results, want %d", what, len(errs), len(want))
	}
	for i := range want {
		switch {
		case want[i] == nil && errs[i] != nil:
			t.Fatalf("%s: claim %d: %v, want success", what, i, errs[i])
		case want[i] != nil:
			s.wantErr(t, fmt.Sprintf("%s: claim %d", what, i), errs[i], want[i])
		}
	}
}

func near(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Second && d < time.Second
}

// batchClaim: one batch holding a key in every state a claim can meet,
// some of them twice, answers exactly what single claims of the same keys in
// the same order answer.
func (s *suite) batchClaim(t *testing.T) {
	bs := s.batchStore(t)
	st := dedupe.Store(bs)
	type scenario struct {
		keys            []dedupe.Key
		holder, expired dedupe.Claim // the in-flight key's holder; the expired lease's old holder
		released        dedupe.Claim
		dupUntil        time.Time
	}
	// Build the same states twice: one set of keys is claimed one by one
	// (the reference), the other in one batch.
	prepare := func() scenario {
		var sc scenario
		fresh, dup, twice, held, expired, released, retEnded, dup2 := NewKey(scope), NewKey(scope), NewKey(scope),
			NewKey(scope), NewKey(scope), NewKey(scope), NewKey(scope), NewKey(scope)
		complete(t, st, claim(t, st, dup, longLease, dedupe.Acquired), time.Hour)
		sc.dupUntil = time.Now().Add(time.Hour)
		complete(t, st, claim(t, st, dup2, longLease, dedupe.Acquired), time.Hour)
		sc.holder = claim(t, st, held, longLease, dedupe.Acquired)
		sc.expired = claim(t, st, expired, s.shortLease(), dedupe.Acquired)
		sc.released = claim(t, st, released, longLease, dedupe.Acquired)
		release(t, st, sc.released)
		complete(t, st, claim(t, st, retEnded, longLease, dedupe.Acquired), s.shortLease())
		sc.keys = []dedupe.Key{fresh, dup, twice, held, expired, twice, released, retEnded, dup2, dup2}
		return sc
	}
	ref, bat := prepare(), prepare()
	time.Sleep(s.shortLease() + 2*s.unit) // the short lease and retention end
	want := []dedupe.Status{dedupe.Acquired, dedupe.Duplicate, dedupe.Acquired, dedupe.InFlight, dedupe.Acquired,
		dedupe.InFlight, dedupe.Acquired, dedupe.Acquired, dedupe.Duplicate, dedupe.Duplicate}

	single := make([]dedupe.Claim, len(ref.keys))
	for i, k := range ref.keys {
		c, err := st.Claim(ctx(t), k, longLease)
		if err != nil {
			t.Fatalf("reference Claim %d: %v", i, err)
		}
		single[i] = c
	}
	before := time.Now()
	batch := s.claimBatch(t, bs, bat.keys, longLease)
	for i := range want {
		if single[i].Status != want[i] {
			t.Fatalf("reference: single Claim %d = %s, want %s", i, single[i].Status, want[i])
		}
		if batch[i].Status != single[i].Status {
			t.Errorf("ClaimBatch: claim %d = %s, single Claim of the same state = %s", i, batch[i].Status, single[i].Status)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i, c := range batch {
		switch c.Status {
		case dedupe.Acquired:
			if c.Until.Before(before.Add(longLease-time.Second)) || c.Until.After(time.Now().Add(longLease+time.Second)) {
				t.Errorf("ClaimBatch: acquired claim %d ends at %v, want in about %v", i, c.Until, longLease)
			}
		case dedupe.Duplicate:
			if !c.Until.IsZero() && !near(c.Until, bat.dupUntil) {
				t.Errorf("ClaimBatch: duplicate %d: Until %v, want about %v", i, c.Until, bat.dupUntil)
			}
		}
	}
	if !near(batch[3].Until, bat.holder.Until) {
		t.Errorf("ClaimBatch: in flight: Until %v, want the holder's lease end %v", batch[3].Until, bat.holder.Until)
	}
	if !near(batch[5].Until, batch[2].Until) {
		t.Errorf("ClaimBatch: second occurrence of a key: Until %v, want the first occurrence's lease end %v", batch[5].Until, batch[2].Until)
	}
	if batch[4].Token <= bat.expired.Token || batch[6].Token <= bat.released.Token {
		t.Errorf("ClaimBatch: tokens %d and %d after tokens %d and %d: want them to grow", batch[4].Token, batch[6].Token, bat.expired.Token, bat.released.Token)
	}
	// The batch's acquisitions are ordinary leases.
	s.wantErr(t, "Complete by the old holder of a lease the batch took over", st.Complete(ctx(t), bat.expired, 0), dedupe.ErrLeaseLost)
	for i, c := range batch {
		if c.Status == dedupe.Acquired {
			claim(t, st, c.Key, longLease, dedupe.InFlight)
			complete(t, st, c, 0)
			claim(t, st, c.Key, longLease, dedupe.Duplicate)
		} else if c.Status == dedupe.InFlight && i == 3 {
			claim(t, st, c.Key, longLease, dedupe.InFlight) // the holder is untouched
		}
	}
}

// batchFinish: CompleteBatch and ReleaseBatch answer claim by claim what
// Complete and Release would, in order, including a claim given twice.
func (s *suite) batchFinish(t *testing.T) {
	bs := s.batchStore(t)
	st := dedupe.Store(bs)
	a, b, c, d := NewKey(scope), NewKey(scope), NewKey(scope), NewKey(scope)
	cl := s.claimBatch(t, bs, []dedupe.Key{a, b, c, d}, longLease)
	for i, x := range cl {
		if !x.Acquired() {
			t.Fatalf("ClaimBatch of fresh keys: claim %d is %s", i, x.Status)
		}
	}
	// A lease lost to another holder, and an in-flight claim.
	lost := NewKey(scope)
	stale := claim(t, st, lost, s.shortLease(), dedupe.Acquired)
	time.Sleep(time.Until(stale.Until.Add(2 * s.unit)))
	taker := claim(t, st, lost, longLease, dedupe.Acquired)
	held := NewKey(scope)
	holder := claim(t, st, held, longLease, dedupe.Acquired)
	inFlight := claim(t, st, held, longLease, dedupe.InFlight)
	invalid := dedupe.Claim{Key: dedupe.Key{ID: uuid.New()}, Status: dedupe.Acquired, Token: 1, Until: time.Now().Add(time.Minute)}

	errs, err := bs.CompleteBatch(ctx(t), []dedupe.Claim{cl[0], cl[1], cl[0], stale, inFlight, invalid, {}}, time.Hour)
	s.wantErrs(t, "CompleteBatch", errs, err, []error{nil, nil, dedupe.ErrLeaseLost, dedupe.ErrLeaseLost,
		dedupe.ErrNotAcquired, dedupe.ErrInvalidKey, dedupe.ErrNotAcquired})
	claim(t, st, a, longLease, dedupe.Duplicate)
	claim(t, st, b, longLease, dedupe.Duplicate)
	claim(t, st, lost, longLease, dedupe.InFlight) // the taker is untouched
	claim(t, st, held, longLease, dedupe.InFlight)

	errs, err = bs.ReleaseBatch(ctx(t), []dedupe.Claim{cl[2], cl[3], cl[2], cl[0], stale, inFlight, invalid})
	s.wantErrs(t, "ReleaseBatch", errs, err, []error{nil, nil, dedupe.ErrLeaseLost, dedupe.ErrLeaseLost,
		dedupe.ErrLeaseLost, dedupe.ErrNotAcquired, dedupe.ErrInvalidKey})
	claim(t, st, a, longLease, dedupe.Duplicate) // a completed claim is not released
	claim(t, st, lost, longLease, dedupe.InFlight)
	again := s.claimBatch(t, bs, []dedupe.Key{c, d}, longLease)
	for i, x := range again {
		if !x.Acquired() || x.Token <= cl[2+i].Token {
			t.Fatalf("ClaimBatch after ReleaseBatch: %s token %d, want acquired with a token above %d", x.Status, x.Token, cl[2+i].Token)
		}
	}

	// Retention applies to the whole call.
	_, err = bs.CompleteBatch(ctx(t), again, -time.Hour)
	s.wantErr(t, "CompleteBatch with a negative retention", err, dedupe.ErrInvalidDuration)
	claim(t, st, c, longLease, dedupe.InFlight) // still held
	if s.opts.Forever {
		errs, err = bs.CompleteBatch(ctx(t), again, dedupe.Forever)
		s.wantErrs(t, "CompleteBatch(Forever)", errs, err, []error{nil, nil})
		if f := claim(t, st, c, longLease, dedupe.Duplicate); !f.Until.IsZero() {
			t.Fatalf("CompleteBatch(Forever): Until %v, want the zero time", f.Until)
		}
	} else {
		_, err = bs.CompleteBatch(ctx(t), again, dedupe.Forever)
		s.wantErr(t, "CompleteBatch(Forever) on a store without Forever", err, dedupe.ErrUnsupported)
		errs, err = bs.ReleaseBatch(ctx(t), again)
		s.wantErrs(t, "ReleaseBatch", errs, err, []error{nil, nil})
	}
	complete(t, st, taker, 0)
	complete(t, st, holder, 0)
}

// batchInvalid: bad input fails the whole call before anything is taken;
// empty batches are no-ops; a cancelled context changes nothing.
func (s *suite) batchInvalid(t *testing.T) {
	bs := s.batchStore(t)
	st := dedupe.Store(bs)
	a, b := NewKey(scope), NewKey(scope)
	for _, bad := range []dedupe.Key{{ID: uuid.New()}, {Scope: scope}, {Scope: "a\x00b", ID: uuid.New()}} {
		claims, err := bs.ClaimBatch(ctx(t), []dedupe.Key{a, bad, b}, longLease)
		s.wantErr(t, "ClaimBatch with an invalid key", err, dedupe.ErrInvalidKey)
		if claims != nil {
			t.Fatalf("ClaimBatch with an invalid key returned claims %v", claims)
		}
	}
	_, err := bs.ClaimBatch(ctx(t), []dedupe.Key{a, b}, -time.Second)
	s.wantErr(t, "ClaimBatch with a negative lease", err, dedupe.ErrInvalidDuration)

	if claims, err := bs.ClaimBatch(ctx(t), nil, longLease); err != nil || len(claims) != 0 {
		t.Fatalf("ClaimBatch(no keys) = %v, %v; want nothing", claims, err)
	}
	if errs, err := bs.CompleteBatch(ctx(t), nil, 0); err != nil || len(errs) != 0 {
		t.Fatalf("CompleteBatch(no claims) = %v, %v; want nothing", errs, err)
	}
	if errs, err := bs.ReleaseBatch(ctx(t), nil); err != nil || len(errs) != 0 {
		t.Fatalf("ReleaseBatch(no claims) = %v, %v; want nothing", errs, err)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = bs.ClaimBatch(cancelled, []dedupe.Key{a, b}, longLease)
	s.wantErr(t, "ClaimBatch(cancelled context)", err, context.Canceled)
	cl := s.claimBatch(t, bs, []dedupe.Key{a, b}, longLease) // nothing was taken before
	if !cl[0].Acquired() || !cl[1].Acquired() {
		t.Fatalf("ClaimBatch after the failed calls = %s, %s; want both acquired", cl[0].Status, cl[1].Status)
	}
	_, err = bs.CompleteBatch(cancelled, cl, 0)
	s.wantErr(t, "CompleteBatch(cancelled context)", err, context.Canceled)
	_, err = bs.ReleaseBatch(cancelled, cl)
	s.wantErr(t, "ReleaseBatch(cancelled context)", err, context.Canceled)
	claim(t, st, a, longLease, dedupe.InFlight) // still held, not done
	errs, err := bs.CompleteBatch(ctx(t), cl, 0)
	s.wantErrs(t, "CompleteBatch", errs, err, []error{nil, nil})
	claim(t, st, b, longLease, dedupe.Duplicate)
}

// batchConcurrent: batches of the same keys in different orders, and single
// claims beside them, acquire each key exactly once, without errors (a store
// that locks keys must not deadlock).
func (s *suite) batchConcurrent(t *testing.T) {
	bs := s.batchStore(t)
	const nkeys, batchers, singles = 32, 6, 2
	keys := make([]dedupe.Key, nkeys)
	for i := range keys {
		keys[i] = NewKey(scope)
	}
	var (
		mu       sync.Mutex
		acquired = map[dedupe.Key][]dedupe.Claim{}
		wg       sync.WaitGroup
		start    = make(chan struct{})
	)
	record := func(c dedupe.Claim) {
		if c.Acquired() {
			mu.Lock()
			acquired[c.Key] = append(acquired[c.Key], c)
			mu.Unlock()
		}
	}
	for g := range batchers {
		wg.Go(func() {
			order := slices.Clone(keys)
			rand.New(rand.NewPCG(uint64(g), 7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			<-start
			claims, err := bs.ClaimBatch(ctx(t), order, longLease)
			if err != nil {
				t.Errorf("ClaimBatch: %v", err)
				return
			}
			for _, c := range claims {
				record(c)
			}
		})
	}
	for range singles {
		wg.Go(func() {
			<-start
			for _, k := range slices.Backward(keys) {
				c, err := bs.Claim(ctx(t), k, longLease)
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
				record(c)
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var winners []dedupe.Claim
	for i, k := range keys {
		if n := len(acquired[k]); n != 1 {
			t.Fatalf("key %d acquired %d times, want once", i, n)
		}
		winners = append(winners, acquired[k][0])
	}
	errs, err := bs.CompleteBatch(ctx(t), winners, 0)
	s.wantErrs(t, "CompleteBatch of the winners", errs, err, make([]error, nkeys))
	for i, c := range s.claimBatch(t, bs, keys, longLease) {
		if c.Status != dedupe.Duplicate {
			t.Fatalf("key %d after completion: %s, want duplicate", i, c.Status)
		}
	}
}

// brokenBatch: a broken store's batch calls fail, and never answer
// acquired or duplicate.
func (s *suite) brokenBatch(t *testing.T, bs dedupe.BatchStore, call func(string, func(context.Context) error)) {
	keys := []dedupe.Key{NewKey(scope), NewKey(scope)}
	call("ClaimBatch", func(ctx context.Context) error {
		claims, err := bs.ClaimBatch(ctx, keys, longLease)
		for _, c := range claims {
			if c.Status == dedupe.Acquired || c.Status == dedupe.Duplicate {
				t.Errorf("ClaimBatch on a broken store returned %s", c.Status)
			}
		}
		return err
	})
	forged := []dedupe.Claim{{Key: keys[0], Status: dedupe.Acquired, Token: 1, Until: time.Now().Add(time.Minute)}}
	call("CompleteBatch", func(ctx context.Context) error {
		errs, err := bs.CompleteBatch(ctx, forged, 0)
		return errors.Join(append(errs, err)...)
	})
	call("ReleaseBatch", func(ctx context.Context) error {
		errs, err := bs.ReleaseBatch(ctx, forged)
		return errors.Join(append(errs, err)...)
	})
	if bi, ok := bs.(dedupe.BatchInbox); ok {
		call("ProcessBatch", func(ctx context.Context) error {
			ran := false
			res, err := bi.ProcessBatch(ctx, keys, longLease, 0, func(context.Context, int) error { ran = true; return nil })
			if ran || res != nil {
				t.Errorf("ProcessBatch on a broken store: results %v, fn ran %v", res, ran)
			}
			return err
		})
	}
}

// processBatch runs ProcessBatch and checks the results' shape.
func (s *suite) processBatch(t *testing.T, bi dedupe.BatchInbox, keys []dedupe.Key, lease time.Duration, fn func(ctx context.Context, i int) error) ([]dedupe.Result, error) {
	t.Helper()
	res, err := bi.ProcessBatch(ctx(t), keys, lease, 0, fn)
	if err != nil {
		if res != nil {
			t.Fatalf("ProcessBatch failed (%v) and returned results %v", err, res)
		}
		return nil, err
	}
	if len(res) != len(keys) {
		t.Fatalf("ProcessBatch(%d keys) returned %d results", len(keys), len(res))
	}
	for i, r := range res {
		if r.Claim.Key != keys[i] {
			t.Fatalf("ProcessBatch: result %d is for %s, want %s", i, r.Claim.Key, keys[i])
		}
		if r.Err != nil && r.Claim.Status != dedupe.Acquired {
			t.Fatalf("ProcessBatch: result %d is %s with an error %v", i, r.Claim.Status, r.Err)
		}
	}
	return res, nil
}

// inboxBatchCommit: a group of acquired, in-flight, duplicate and repeated
// keys: fn runs for the acquired ones, in order, and their writes and
// completions commit together.
func (s *suite) inboxBatchCommit(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	a, b, held, dup := NewKey(scope), NewKey(scope), NewKey(scope), NewKey(scope)
	holder := claim(t, st, held, longLease, dedupe.Acquired)
	complete(t, st, claim(t, st, dup, longLease, dedupe.Acquired), 0)
	keys := []dedupe.Key{a, held, dup, b, a}
	var called []int
	res, err := s.processBatch(t, bi, keys, longLease, func(ctx context.Context, i int) error {
		called = append(called, i)
		return s.opts.InboxWrite(ctx, t, keys[i])
	})
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	want := []dedupe.Status{dedupe.Acquired, dedupe.InFlight, dedupe.Duplicate, dedupe.Acquired, dedupe.InFlight}
	for i, r := range res {
		if r.Claim.Status != want[i] || r.Err != nil {
			t.Fatalf("ProcessBatch: result %d = %s, %v; want %s, nil", i, r.Claim.Status, r.Err, want[i])
		}
	}
	if !slices.Equal(called, []int{0, 3}) {
		t.Fatalf("fn called for %v, want [0 3]", called)
	}
	if !near(res[1].Claim.Until, holder.Until) || !near(res[4].Claim.Until, res[0].Claim.Until) {
		t.Fatalf("in-flight results end at %v and %v, want the holders' lease ends %v and %v",
			res[1].Claim.Until, res[4].Claim.Until, holder.Until, res[0].Claim.Until)
	}
	for _, k := range []dedupe.Key{a, b} {
		if !s.opts.InboxHasRow(t, k) {
			t.Fatalf("the write for %s is absent after the group committed", k)
		}
		claim(t, st, k, longLease, dedupe.Duplicate)
	}
	if s.opts.InboxHasRow(t, held) || s.opts.InboxHasRow(t, dup) {
		t.Fatal("fn wrote for a key it was not called for")
	}
	claim(t, st, held, longLease, dedupe.InFlight)
	complete(t, st, holder, 0)
}

// inboxBatchMemberFails: a failing member rolls back only its own writes and
// its claim is released; the others commit.
func (s *suite) inboxBatchMemberFails(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	keys := []dedupe.Key{NewKey(scope), NewKey(scope), NewKey(scope)}
	res, err := s.processBatch(t, bi, keys, longLease, func(ctx context.Context, i int) error {
		if err := s.opts.InboxWrite(ctx, t, keys[i]); err != nil {
			return err
		}
		if i == 1 {
			return errHandler
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ProcessBatch with one failing member: %v", err)
	}
	wantIs(t, "the failing member's result", res[1].Err, errHandler)
	if res[0].Err != nil || res[2].Err != nil {
		t.Fatalf("the other members failed: %v, %v", res[0].Err, res[2].Err)
	}
	if !s.opts.InboxHasRow(t, keys[0]) || !s.opts.InboxHasRow(t, keys[2]) {
		t.Fatal("the succeeding members' writes are absent")
	}
	if s.opts.InboxHasRow(t, keys[1]) {
		t.Fatal("the failing member's write was committed")
	}
	claim(t, st, keys[0], longLease, dedupe.Duplicate)
	claim(t, st, keys[2], longLease, dedupe.Duplicate)
	claim(t, st, keys[1], longLease, dedupe.Acquired) // released at once
}

// inboxBatchPanic: a panicking member rolls the whole group back, releases
// every claim and panics on, as Process does.
func (s *suite) inboxBatchPanic(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	keys := []dedupe.Key{NewKey(scope), NewKey(scope), NewKey(scope)}
	var called []int
	func() {
		defer func() {
			if r := recover(); r != "dedupetest: boom" {
				t.Fatalf("recovered %v, want fn's panic", r)
			}
		}()
		_, _ = bi.ProcessBatch(ctx(t), keys, longLease, 0, func(ctx context.Context, i int) error {
			called = append(called, i)
			if err := s.opts.InboxWrite(ctx, t, keys[i]); err != nil {
				return err
			}
			if i == 1 {
				panic("dedupetest: boom")
			}
			return nil
		})
	}()
	if !slices.Equal(called, []int{0, 1}) {
		t.Fatalf("fn called for %v, want [0 1]", called)
	}
	for i, k := range keys {
		if s.opts.InboxHasRow(t, k) {
			t.Fatalf("member %d's write was committed by a group that panicked", i)
		}
		claim(t, st, k, longLease, dedupe.Acquired) // released
	}
}

// inboxBatchCommitFailure: a member's write that makes COMMIT fail fails the
// group: an error wrapping ErrRolledBack, nothing written, every claim
// released, so the caller can process the messages one by one.
func (s *suite) inboxBatchCommitFailure(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	keys := []dedupe.Key{NewKey(scope), NewKey(scope), NewKey(scope)}
	_, err := s.processBatch(t, bi, keys, longLease, func(ctx context.Context, i int) error {
		if err := s.opts.InboxWrite(ctx, t, keys[i]); err != nil {
			return err
		}
		if i == 1 {
			return s.opts.InboxFailCommit(ctx, t, keys[i])
		}
		return nil
	})
	s.wantErr(t, "ProcessBatch whose commit fails", err, dedupe.ErrRolledBack)
	for i, k := range keys {
		if s.opts.InboxHasRow(t, k) {
			t.Fatalf("member %d's write is present after the group's commit failed", i)
		}
		claim(t, st, k, longLease, dedupe.Acquired) // released
	}
}

// inboxBatchLeaseLost: a member whose lease was lost before the group's
// completion fails the group (its writes must not commit): ErrLeaseLost,
// nothing written, the new holder untouched.
func (s *suite) inboxBatchLeaseLost(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	keys := []dedupe.Key{NewKey(scope), NewKey(scope)}
	lease := s.shortLease()
	var taker dedupe.Claim
	_, err := s.processBatch(t, bi, keys, lease, func(ctx context.Context, i int) error {
		if err := s.opts.InboxWrite(ctx, t, keys[i]); err != nil {
			return err
		}
		if i == 1 {
			time.Sleep(lease + 2*s.unit)
			c, err := bi.Claim(context.Background(), keys[0], longLease)
			if err != nil || !c.Acquired() {
				t.Errorf("Claim of an expired lease during ProcessBatch = %s, %v; want acquired", c.Status, err)
			}
			taker = c
		}
		return nil
	})
	s.wantErr(t, "ProcessBatch whose lease was lost", err, dedupe.ErrLeaseLost)
	for i, k := range keys {
		if s.opts.InboxHasRow(t, k) {
			t.Fatalf("member %d's write is present after the group lost a lease", i)
		}
	}
	if taker.Acquired() {
		claim(t, st, keys[0], longLease, dedupe.InFlight)
		complete(t, st, taker, 0)
	}
	claim(t, st, keys[1], longLease, dedupe.Acquired)
}

// inboxBatchInvalid: bad input and a cancelled context fail the call before
// anything is claimed or fn called.
func (s *suite) inboxBatchInvalid(t *testing.T) {
	bi := s.batchInbox(t)
	st := dedupe.Store(bi)
	good := NewKey(scope)
	fn := func(context.Context, int) error {
		t.Error("fn called for a call that must fail first")
		return nil
	}
	res, err := bi.ProcessBatch(ctx(t), []dedupe.Key{good, {Scope: scope}}, longLease, 0, fn)
	s.wantErr(t, "ProcessBatch with an invalid key", err, dedupe.ErrInvalidKey)
	if res != nil {
		t.Fatalf("ProcessBatch with an invalid key returned %v", res)
	}
	_, err = bi.ProcessBatch(ctx(t), []dedupe.Key{good}, longLease, -time.Hour, fn)
	s.wantErr(t, "ProcessBatch with a negative retention", err, dedupe.ErrInvalidDuration)
	if _, err := bi.ProcessBatch(ctx(t), []dedupe.Key{good}, longLease, 0, nil); err == nil {
		t.Fatal("ProcessBatch(nil fn) accepted it")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = bi.ProcessBatch(cancelled, []dedupe.Key{good}, longLease, 0, fn)
	s.wantErr(t, "ProcessBatch(cancelled context)", err, context.Canceled)
	if res, err := bi.ProcessBatch(ctx(t), nil, longLease, 0, fn); err != nil || len(res) != 0 {
		t.Fatalf("ProcessBatch(no keys) = %v, %v; want nothing", res, err)
	}
	claim(t, st, good, longLease, dedupe.Acquired) // nothing was taken
}
