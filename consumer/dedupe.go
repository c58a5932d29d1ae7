package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
)

// Dedupe returns a middleware that processes each message ID once per scope
// (the consumer's name or group), using the claim protocol of package
// dedupe:
//
//   - duplicate: the handler is not called and nil is returned, so the
//     message is acknowledged;
//   - acquired: the handler runs; on success the completion is stored and
//     only then is nil returned (acknowledge after completion); on failure
//     the claim is released and the handler's error returned;
//   - in flight: an *[InFlightError] ([ErrInFlight]) is returned: neither
//     acknowledge nor drop, deliver again later;
//   - a store error: an error matching [ErrStore] (and the store's own
//     sentinel): the message is not acknowledged and waits.
//
// A completion that fails for a passing store error is retried with the
// same claim for as long as its lease lasts, so a store hiccup after the
// handler succeeded does not run the handler again; only a lost lease does.
//
// When store implements [dedupe.Inbox] (and [WithoutInbox] is not given) the
// handler runs inside [dedupe.Inbox.Process]: its writes through the
// store's transaction and the completion commit together, and a failing
// handler leaves nothing behind. A transaction that cannot commit because of
// the handler's own writes (an error wrapping [dedupe.ErrRolledBack]: a
// deferred constraint, a statement error the handler ignored, a
// serialization failure) is the handler's failure: it is returned as an
// ordinary error, so it is retried and, after the attempts, dead-lettered
// with that reason; only a failure of the store itself matches [ErrStore].
//
// Of opts, [WithLease], [WithRetention] and [WithoutInbox] apply. Dedupe
// panics on a nil store, an invalid scope or an invalid option, so that it
// can be written inline in [Chain]; [WithDedupe] reports the same as errors.
// The middleware is safe for concurrent use if store is.
func Dedupe(store dedupe.Store, scope string, opts ...Option) Middleware {
	s, err := Apply("consumer", nil, append([]Option{WithDedupe(store, scope)}, opts...))
	if err != nil {
		// Apply's error names the package; the panic names Dedupe after it.
		panic("consumer: Dedupe: " + strings.TrimPrefix(err.Error(), "consumer: "))
	}
	return dedupeMiddleware(&s)
}

func dedupeMiddleware(s *Settings) Middleware {
	inbox, isInbox := s.Store.(dedupe.Inbox)
	if s.NoInbox {
		isInbox = false
	}
	cfg := dedupeConfig{store: s.Store, scope: s.Scope, lease: s.Lease, retention: s.Retention}
	return func(next Handler) Handler {
		if isInbox {
			return &inboxHandler{dedupeConfig: cfg, next: next, inbox: inbox}
		}
		return &dedupeHandler{dedupeConfig: cfg, next: next}
	}
}

type dedupeConfig struct {
	store            dedupe.Store
	scope            string
	lease, retention time.Duration
}

type dedupeHandler struct {
	dedupeConfig
	next Handler
}

func (d *dedupeHandler) layerInfo() (layerKind, Handler) { return layerDedupe, d.next }

func (d *dedupeHandler) Handle(ctx context.Context, m *Message) error {
	var c dedupe.Claim
	batch := m.state.batch
	if batch != nil && batch.claimed {
		c = batch.claim // claimed with the rest of a batch ([Processor.ProcessBatch])
		batch.used = true
	} else {
		var err error
		c, err = d.store.Claim(ctx, dedupe.Key{Scope: d.scope, ID: m.ID}, d.lease)
		if err != nil {
			m.state.attempt.skipped = true
			return &storeError{fmt.Errorf("claim %s: %w", m.ID, err)}
		}
	}
	switch c.Status {
	case dedupe.Duplicate:
		m.state.attempt.skipped, m.state.attempt.duplicate = true, true
		return nil
	case dedupe.InFlight:
		m.state.attempt.skipped = true
		return &InFlightError{ID: m.ID, Until: c.Until}
	case dedupe.Acquired:
	default:
		m.state.attempt.skipped = true
		return &storeError{fmt.Errorf("claim %s: unexpected status %s", m.ID, c.Status)}
	}
	done := false
	defer func() {
		if !done { // the handler panicked: give the claim back, keep panicking
			rctx, cancel := detached(ctx, storeCallTimeout)
			defer cancel()
			_ = d.store.Release(rctx, c)
		}
	}()
	herr := d.next.Handle(ctx, m)
	done = true
	if herr != nil {
		rctx, cancel := detached(ctx, storeCallTimeout)
		defer cancel()
		if rerr := d.store.Release(rctx, c); rerr != nil {
			// The lease then runs out on its own; the handler's error is
			// what decides retry or dead letter.
			return fmt.Errorf("%w (and release failed: %v)", herr, rerr)
		}
		return herr
	}
	if batch != nil && batch.claimed {
		batch.pending = true // completed with the rest of the batch
		return nil
	}
	if err := d.complete(ctx, c); err != nil {
		if errors.Is(err, dedupe.ErrLeaseLost) {
			m.state.attempt.leaseLost = true
		}
		return &storeError{fmt.Errorf("complete %s: %w", m.ID, err)}
	}
	return nil
}

// complete stores c's completion, retrying a failure other than a lost
// lease with the same claim while the lease lasts: the work is done, and
// running the handler again would repeat its effect.
func (d *dedupeHandler) complete(ctx context.Context, c dedupe.Claim) error {
	wait := 10 * time.Millisecond
	for {
		cctx, cancel := detached(ctx, storeCallTimeout)
		err := d.store.Complete(cctx, c, d.retention)
		cancel()
		if err == nil || errors.Is(err, dedupe.ErrLeaseLost) || errors.Is(err, dedupe.ErrNotAcquired) ||
			errors.Is(err, dedupe.ErrInvalidKey) || errors.Is(err, dedupe.ErrInvalidDuration) || errors.Is(err, dedupe.ErrClosed) {
			return err
		}
		// Stop in time for the lease: past it another consumer may claim
		// the message, and the completion would fail anyway.
		if c.Until.IsZero() || time.Until(c.Until) < wait+completeMargin {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// storeCallTimeout bounds one store call made after the handler returned
// (a release, a completion): it must not be cut short by the handler's
// context ending, nor hang on a store that does not answer. (The lease's
// end, in the store's clock, bounds only how long a completion is retried:
// a deadline taken from it would depend on the two clocks agreeing.)
var storeCallTimeout = 10 * time.Second // a variable for tests only

// detached returns a context for such a call: it outlives ctx's
// cancellation (but keeps its values) and ends after d.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// completeMargin is kept between the last completion attempt and the end
// of the lease.
const completeMargin = 50 * time.Millisecond

type inboxHandler struct {
	dedupeConfig
	next  Handler
	inbox dedupe.Inbox
}

func (d *inboxHandler) layerInfo() (layerKind, Handler) { return layerDedupe, d.next }

func (d *inboxHandler) Handle(ctx context.Context, m *Message) error {
	if b := m.state.batch; b != nil && b.inTx {
		// Inside a BatchInbox group: claimed, and completed at its commit.
		return d.next.Handle(ctx, m)
	}
	var herr error
	called := false
	c, err := d.inbox.Process(ctx, dedupe.Key{Scope: d.scope, ID: m.ID}, d.lease, d.retention,
		func(ctx context.Context) error {
			called = true
			herr = d.next.Handle(ctx, m)
			return herr
		})
	if !called {
		m.state.attempt.skipped = true
	}
	if herr != nil {
		return herr
	}
	if err != nil {
		if called && errors.Is(err, dedupe.ErrRolledBack) {
			// The handler's own writes kept the transaction from
			// committing: its failure, retried and dead-lettered like any.
			return fmt.Errorf("consumer: dedupe inbox: message %s: %w", m.ID, err)
		}
		if errors.Is(err, dedupe.ErrLeaseLost) {
			m.state.attempt.leaseLost = true
		}
		return &storeError{fmt.Errorf("process %s: %w", m.ID, err)}
	}
	switch c.Status {
	case dedupe.Duplicate:
		m.state.attempt.duplicate = true
		return nil
	case dedupe.InFlight:
		return &InFlightError{ID: m.ID, Until: c.Until}
	case dedupe.Acquired:
		if !called {
			return &storeError{fmt.Errorf("process %s: acquired but the handler was not run", m.ID)}
		}
		return nil
	}
	return &storeError{fmt.Errorf("process %s: unexpected status %s", m.ID, c.Status)}
}
