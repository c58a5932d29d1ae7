package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
)

// DedupeOption configures [Dedupe].
type DedupeOption func(*dedupeConfig)

type dedupeConfig struct {
	lease, retention time.Duration
	noInbox          bool
}

// WithLease sets how long a claim is held before another consumer may take
// the message (default 0: the store's default, [dedupe.DefaultLease]). It
// must exceed the handler's longest run ([Timeout]).
func WithLease(d time.Duration) DedupeOption { return func(c *dedupeConfig) { c.lease = d } }

// WithRetention sets how long a completed message is remembered as a
// duplicate (default 0: the store's default; [dedupe.Forever] for replays of
// a whole topic, where the store supports it).
func WithRetention(d time.Duration) DedupeOption { return func(c *dedupeConfig) { c.retention = d } }

// WithoutInbox makes [Dedupe] use Claim / Complete / Release even when the
// store implements [dedupe.Inbox]. Default: a store that is an Inbox runs the
// handler inside its transaction.
func WithoutInbox() DedupeOption { return func(c *dedupeConfig) { c.noInbox = true } }

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
// The middleware is safe for concurrent use if store is.
func Dedupe(store dedupe.Store, scope string, opts ...DedupeOption) (Middleware, error) {
	if store == nil {
		return nil, errors.New("consumer: dedupe: nil store")
	}
	var cfg dedupeConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := (dedupe.Key{Scope: scope, ID: [16]byte{1}}).Validate(); err != nil {
		return nil, fmt.Errorf("consumer: dedupe scope %q: %w", scope, err)
	}
	if _, err := dedupe.LeaseOrDefault(cfg.lease, dedupe.DefaultLease); err != nil {
		return nil, fmt.Errorf("consumer: dedupe: %w", err)
	}
	if _, err := dedupe.RetentionOrDefault(cfg.retention, dedupe.DefaultRetention); err != nil {
		return nil, fmt.Errorf("consumer: dedupe: %w", err)
	}
	inbox, isInbox := store.(dedupe.Inbox)
	if cfg.noInbox {
		isInbox = false
	}
	return func(next Handler) Handler {
		if isInbox {
			return &inboxHandler{next: next, inbox: inbox, scope: scope, cfg: cfg}
		}
		return &dedupeHandler{next: next, store: store, scope: scope, cfg: cfg}
	}, nil
}

type dedupeHandler struct {
	next  Handler
	store dedupe.Store
	scope string
	cfg   dedupeConfig
}

func (d *dedupeHandler) Handle(ctx context.Context, m *Message) error {
	c, err := d.store.Claim(ctx, dedupe.Key{Scope: d.scope, ID: m.ID}, d.cfg.lease)
	if err != nil {
		return &storeError{fmt.Errorf("claim %s: %w", m.ID, err)}
	}
	switch c.Status {
	case dedupe.Duplicate:
		return nil
	case dedupe.InFlight:
		return &InFlightError{ID: m.ID, Until: c.Until}
	case dedupe.Acquired:
	default:
		return &storeError{fmt.Errorf("claim %s: unexpected status %s", m.ID, c.Status)}
	}
	done := false
	defer func() {
		if !done { // the handler panicked: give the claim back, keep panicking
			_ = d.store.Release(context.WithoutCancel(ctx), c)
		}
	}()
	herr := d.next.Handle(ctx, m)
	done = true
	if herr != nil {
		if rerr := d.store.Release(context.WithoutCancel(ctx), c); rerr != nil {
			// The lease then runs out on its own; the handler's error is
			// what decides retry or dead letter.
			return fmt.Errorf("%w (and release failed: %v)", herr, rerr)
		}
		return herr
	}
	if err := d.store.Complete(context.WithoutCancel(ctx), c, d.cfg.retention); err != nil {
		return &storeError{fmt.Errorf("complete %s: %w", m.ID, err)}
	}
	return nil
}

type inboxHandler struct {
	next  Handler
	inbox dedupe.Inbox
	scope string
	cfg   dedupeConfig
}

func (d *inboxHandler) Handle(ctx context.Context, m *Message) error {
	var herr error
	called := false
	c, err := d.inbox.Process(ctx, dedupe.Key{Scope: d.scope, ID: m.ID}, d.cfg.lease, d.cfg.retention,
		func(ctx context.Context) error {
			called = true
			herr = d.next.Handle(ctx, m)
			return herr
		})
	if herr != nil {
		return herr
	}
	if err != nil {
		if errors.Is(err, dedupe.ErrRolledBack) {
			// The handler's own writes kept the transaction from
			// committing: its failure, retried and dead-lettered like any.
			return fmt.Errorf("consumer: dedupe inbox: message %s: %w", m.ID, err)
		}
		return &storeError{fmt.Errorf("process %s: %w", m.ID, err)}
	}
	switch c.Status {
	case dedupe.Duplicate:
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
