package dedupetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// The admin cases check a dedupe.Admin: Inspect reports what the protocol
// did to a key, Forget deletes a record so the next claim acquires, refuses
// a live lease without force, and keeps fencing.

func (s *suite) admin(t *testing.T) dedupe.Admin {
	t.Helper()
	st := s.store(t)
	ad, ok := st.(dedupe.Admin)
	if !ok {
		t.Fatalf("dedupetest: %T does not implement dedupe.Admin", st)
	}
	return ad
}

func inspect(t *testing.T, ad dedupe.Admin, key dedupe.Key) dedupe.Record {
	t.Helper()
	r, err := ad.Inspect(ctx(t), key)
	if err != nil {
		t.Fatalf("Inspect(%s): %v", key, err)
	}
	return r
}

func forget(t *testing.T, ad dedupe.Admin, key dedupe.Key, force bool) dedupe.Record {
	t.Helper()
	r, err := ad.Forget(ctx(t), key, force)
	if err != nil {
		t.Fatalf("Forget(%s, force %v): %v", key, force, err)
	}
	return r
}

// wantRecord checks r against want; want.Until is compared within a second
// (clock skew between a server and this process), the rest exactly.
func wantRecord(t *testing.T, what string, r, want dedupe.Record) {
	t.Helper()
	ok := r.State == want.State && r.Token == want.Token && r.Expired == want.Expired &&
		r.Until.IsZero() == want.Until.IsZero() && (want.Until.IsZero() || near(r.Until, want.Until))
	if !ok {
		t.Fatalf("%s = %v, want %v", what, r, want)
	}
}

// adminInspect: Inspect reports every state the protocol leaves a key in.
func (s *suite) adminInspect(t *testing.T) {
	ad := s.admin(t)
	key := NewKey(scope)
	wantRecord(t, "Inspect(never claimed)", inspect(t, ad, key), dedupe.Record{})
	// A scope nobody used is absent too.
	wantRecord(t, "Inspect(unknown scope)", inspect(t, ad, NewKey(scope+"-unused-"+uuid.NewString())), dedupe.Record{})

	c := claim(t, ad, key, longLease, dedupe.Acquired)
	wantRecord(t, "Inspect(leased)", inspect(t, ad, key), dedupe.Record{State: dedupe.Leased, Token: c.Token, Until: c.Until})
	claim(t, ad, key, longLease, dedupe.InFlight) // Inspect took nothing

	complete(t, ad, c, time.Hour)
	wantRecord(t, "Inspect(done)", inspect(t, ad, key), dedupe.Record{State: dedupe.Done, Token: c.Token, Until: time.Now().Add(time.Hour)})
	claim(t, ad, key, longLease, dedupe.Duplicate)

	if s.opts.Forever {
		fk := NewKey(scope)
		fc := claim(t, ad, fk, longLease, dedupe.Acquired)
		complete(t, ad, fc, dedupe.Forever)
		r := inspect(t, ad, fk)
		wantRecord(t, "Inspect(done forever)", r, dedupe.Record{State: dedupe.Done, Token: fc.Token})
		if !r.Forever() {
			t.Fatalf("Inspect(done forever).Forever() = false for %s", r)
		}
	}

	rk := NewKey(scope)
	rc := claim(t, ad, rk, longLease, dedupe.Acquired)
	release(t, ad, rc)
	switch r := inspect(t, ad, rk); r.State {
	case dedupe.Released:
		if r.Token != rc.Token && r.Token != 0 {
			t.Fatalf("Inspect(released) = %s, want token %d (or 0)", r, rc.Token)
		}
		if !r.Until.IsZero() || r.Expired {
			t.Fatalf("Inspect(released) = %s, want no Until and not expired", r)
		}
	case dedupe.Absent:
		wantRecord(t, "Inspect(released)", r, dedupe.Record{})
	default:
		t.Fatalf("Inspect(released) = %s, want released or absent", r)
	}

	// A lease that ended is leased and expired until the store drops it.
	ek := NewKey(scope)
	ec := claim(t, ad, ek, s.shortLease(), dedupe.Acquired)
	wantRecord(t, "Inspect(short lease)", inspect(t, ad, ek), dedupe.Record{State: dedupe.Leased, Token: ec.Token, Until: ec.Until})
	time.Sleep(time.Until(ec.Until.Add(s.unit)))
	if r := inspect(t, ad, ek); r.State != dedupe.Absent {
		wantRecord(t, "Inspect(lease ended)", r, dedupe.Record{State: dedupe.Leased, Token: ec.Token, Until: ec.Until, Expired: true})
		if r.Live() {
			t.Fatalf("Inspect(lease ended) = %s reports a live lease", r)
		}
	}
	claim(t, ad, ek, longLease, dedupe.Acquired)
}

// adminForgetDone: a forgotten completion is claimable again, with a larger
// token, and the old claim cannot complete over the new one.
func (s *suite) adminForgetDone(t *testing.T) {
	ad := s.admin(t)
	retentions := []time.Duration{time.Hour}
	if s.opts.Forever {
		retentions = append(retentions, dedupe.Forever)
	}
	for _, retention := range retentions {
		key := NewKey(scope)
		c := claim(t, ad, key, longLease, dedupe.Acquired)
		complete(t, ad, c, retention)
		before := inspect(t, ad, key)
		r := forget(t, ad, key, false)
		wantRecord(t, fmt.Sprintf("Forget(done for %v)", retention), r, before)
		if r.State != dedupe.Done {
			t.Fatalf("Forget(done for %v) returned %s, want the done record", retention, r)
		}
		wantRecord(t, "Inspect after Forget", inspect(t, ad, key), dedupe.Record{})
		again := claim(t, ad, key, longLease, dedupe.Acquired)
		if again.Token <= c.Token {
			t.Fatalf("token after Forget %d, want > %d", again.Token, c.Token)
		}
		s.wantErr(t, "Complete by the forgotten claim", ad.Complete(ctx(t), c, 0), dedupe.ErrLeaseLost)
		s.wantErr(t, "Release by the forgotten claim", ad.Release(ctx(t), c), dedupe.ErrLeaseLost)
		claim(t, ad, key, longLease, dedupe.InFlight) // the new holder is untouched
		complete(t, ad, again, 0)
		claim(t, ad, key, longLease, dedupe.Duplicate)
	}
}

// adminForgetLease: a live lease is refused without force and changes
// nothing; with force, the holder's Complete and Release fail with
// ErrLeaseLost and the next claim acquires with a larger token.
func (s *suite) adminForgetLease(t *testing.T) {
	ad := s.admin(t)
	key := NewKey(scope)
	holder := claim(t, ad, key, longLease, dedupe.Acquired)
	leased := dedupe.Record{State: dedupe.Leased, Token: holder.Token, Until: holder.Until}

	r, err := ad.Forget(ctx(t), key, false)
	s.wantErr(t, "Forget(live lease) without force", err, dedupe.ErrLeaseHeld)
	wantRecord(t, "Forget(live lease) without force", r, leased)
	wantRecord(t, "Inspect after a refused Forget", inspect(t, ad, key), leased)
	claim(t, ad, key, longLease, dedupe.InFlight)

	wantRecord(t, "Forget(live lease, force)", forget(t, ad, key, true), leased)
	wantRecord(t, "Inspect after a forced Forget", inspect(t, ad, key), dedupe.Record{})
	s.wantErr(t, "Complete by the holder whose lease was forgotten", ad.Complete(ctx(t), holder, 0), dedupe.ErrLeaseLost)
	s.wantErr(t, "Release by the holder whose lease was forgotten", ad.Release(ctx(t), holder), dedupe.ErrLeaseLost)

	next := claim(t, ad, key, longLease, dedupe.Acquired)
	if next.Token <= holder.Token {
		t.Fatalf("token after a forced Forget %d, want > %d", next.Token, holder.Token)
	}
	s.wantErr(t, "Complete by the forgotten holder after a new claim", ad.Complete(ctx(t), holder, 0), dedupe.ErrLeaseLost)
	claim(t, ad, key, longLease, dedupe.InFlight)
	complete(t, ad, next, 0)
	claim(t, ad, key, longLease, dedupe.Duplicate)

	// Forcing a key that is not leased is an ordinary Forget.
	if r := forget(t, ad, key, true); r.State != dedupe.Done || r.Token != next.Token {
		t.Fatalf("Forget(done, force) = %s, want the done record of token %d", r, next.Token)
	}
	claim(t, ad, key, longLease, dedupe.Acquired)
}

// adminForgetEnded: a lease that ended, a released key and a key that never
// had a record are forgotten without force; the last two change nothing.
func (s *suite) adminForgetEnded(t *testing.T) {
	ad := s.admin(t)

	key := NewKey(scope)
	wantRecord(t, "Forget(never claimed)", forget(t, ad, key, false), dedupe.Record{})
	first := claim(t, ad, key, s.shortLease(), dedupe.Acquired)
	time.Sleep(time.Until(first.Until.Add(s.unit)))
	if r := forget(t, ad, key, false); r.State != dedupe.Absent {
		wantRecord(t, "Forget(lease ended)", r, dedupe.Record{State: dedupe.Leased, Token: first.Token, Until: first.Until, Expired: true})
	}
	wantRecord(t, "Inspect after Forget(lease ended)", inspect(t, ad, key), dedupe.Record{})
	s.wantErr(t, "Complete by the holder whose ended lease was forgotten", ad.Complete(ctx(t), first, 0), dedupe.ErrLeaseLost)
	second := claim(t, ad, key, longLease, dedupe.Acquired)
	if second.Token <= first.Token {
		t.Fatalf("token after Forget(lease ended) %d, want > %d", second.Token, first.Token)
	}
	release(t, ad, second)
	if r := forget(t, ad, key, false); r.State != dedupe.Released && r.State != dedupe.Absent {
		t.Fatalf("Forget(released) = %s, want released or absent", r)
	}
	wantRecord(t, "Forget(forgotten)", forget(t, ad, key, false), dedupe.Record{})
	third := claim(t, ad, key, longLease, dedupe.Acquired)
	if third.Token <= second.Token {
		t.Fatalf("token after Forget(released) %d, want > %d", third.Token, second.Token)
	}
	complete(t, ad, third, 0)
}

// adminTokensGrow: tokens grow across any number of forgotten records.
func (s *suite) adminTokensGrow(t *testing.T) {
	ad := s.admin(t)
	key := NewKey(scope)
	var last uint64
	for i := range 10 {
		c := claim(t, ad, key, longLease, dedupe.Acquired)
		if c.Token <= last {
			t.Fatalf("acquisition %d after Forget: token %d, want > %d", i, c.Token, last)
		}
		last = c.Token
		switch i % 3 {
		case 0:
			complete(t, ad, c, 0)
			forget(t, ad, key, false)
		case 1:
			forget(t, ad, key, true)
		case 2:
			release(t, ad, c)
			forget(t, ad, key, false)
		}
	}
}

// adminInvalid: invalid keys and cancelled contexts are errors that change
// nothing.
func (s *suite) adminInvalid(t *testing.T) {
	ad := s.admin(t)
	for _, b := range invalidKeys() {
		t.Run(b.name, func(t *testing.T) {
			r, err := ad.Inspect(ctx(t), b.key)
			s.wantErr(t, "Inspect", err, dedupe.ErrInvalidKey)
			wantRecord(t, "Inspect(invalid key)", r, dedupe.Record{})
			r, err = ad.Forget(ctx(t), b.key, true)
			s.wantErr(t, "Forget", err, dedupe.ErrInvalidKey)
			wantRecord(t, "Forget(invalid key)", r, dedupe.Record{})
		})
	}
	t.Run("cancelled context", func(t *testing.T) {
		key := NewKey(scope)
		c := claim(t, ad, key, longLease, dedupe.Acquired)
		complete(t, ad, c, 0)
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := ad.Inspect(cancelled, key)
		s.wantErr(t, "Inspect(cancelled context)", err, context.Canceled)
		_, err = ad.Forget(cancelled, key, true)
		s.wantErr(t, "Forget(cancelled context)", err, context.Canceled)
		claim(t, ad, key, longLease, dedupe.Duplicate) // not forgotten
	})
}

// brokenAdmin: a broken store's Inspect and Forget fail.
func (s *suite) brokenAdmin(t *testing.T, ad dedupe.Admin, key dedupe.Key, call func(string, func(context.Context) error)) {
	call("Inspect", func(ctx context.Context) error {
		_, err := ad.Inspect(ctx, key)
		return err
	})
	call("Forget", func(ctx context.Context) error {
		_, err := ad.Forget(ctx, key, true)
		return err
	})
}

// adminForgetInbox: a lease forgotten (with force) while an inbox handler
// runs makes Process fail with ErrLeaseLost: the handler's writes do not
// commit, and the next claim acquires.
func (s *suite) adminForgetInbox(t *testing.T) {
	in := s.inbox(t)
	ad, ok := dedupe.Store(in).(dedupe.Admin)
	if !ok {
		t.Fatalf("dedupetest: %T does not implement dedupe.Admin", in)
	}
	key := NewKey(scope)
	c, err := in.Process(ctx(t), key, longLease, 0, func(pctx context.Context) error {
		if err := s.opts.InboxWrite(pctx, t, key); err != nil {
			return err
		}
		if r, err := ad.Forget(ctx(t), key, true); err != nil || r.State != dedupe.Leased {
			t.Errorf("Forget(force) while the handler runs = %v, %v; want the handler's lease", r, err)
		}
		return nil
	})
	s.wantErr(t, "Process whose lease was forgotten", err, dedupe.ErrLeaseLost)
	if s.opts.InboxHasRow(t, key) {
		t.Fatal("a handler whose lease was forgotten committed its write")
	}
	next := claim(t, ad, key, longLease, dedupe.Acquired)
	if next.Token <= c.Token {
		t.Fatalf("token after Forget %d, want > %d", next.Token, c.Token)
	}
	complete(t, ad, next, 0)
}
