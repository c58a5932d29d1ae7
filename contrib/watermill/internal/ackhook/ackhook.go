// Package ackhook lets a router middleware (the Middleware of
// wmforge.Deduplicator) tell the subscriber that delivered a message what
// must happen before the message is acknowledged at the broker, and why it
// was nacked.
//
// The subscribers of this module put a [Hook] in every message's context.
// A middleware registers a completion with [Hook.Defer]; when the router
// acks the message, the subscriber runs the completions ([Hook.Acked]) and
// acknowledges at the broker only if they all succeeded, so a message is
// never acknowledged before its dedupe completion is stored. On a nack the
// subscriber runs the rollbacks ([Hook.Nacked]) and hands the reason set
// with [Hook.SetErr] to the consumer loop, which then waits for another
// consumer's lease or for the store instead of retrying at once.
package ackhook

import (
	"context"
	"errors"
	"sync"
)

// Hook is the per-delivery channel between middlewares and the subscriber.
// It is safe for concurrent use.
type Hook struct {
	mu     sync.Mutex
	acks   []func() error
	nacks  []func()
	err    error
	closed bool
}

type ctxKey struct{}

// NewContext returns ctx carrying h.
func NewContext(ctx context.Context, h *Hook) context.Context {
	return context.WithValue(ctx, ctxKey{}, h)
}

// FromContext returns the hook in ctx, or nil.
func FromContext(ctx context.Context) *Hook {
	h, _ := ctx.Value(ctxKey{}).(*Hook)
	return h
}

// Defer registers what to do when the message is acked (complete; an error
// keeps the broker from acknowledging it) and when it is nacked or
// abandoned (release). It reports false when the hook was already settled:
// the caller must then settle the work itself.
func (h *Hook) Defer(onAck func() error, onNack func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.acks = append(h.acks, onAck)
	h.nacks = append(h.nacks, onNack)
	return true
}

// SetErr records why the message is about to be nacked; the last error set
// wins (a retrying middleware outside may run the handler several times).
func (h *Hook) SetErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
}

func (h *Hook) settle() (acks []func() error, nacks []func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, h.err
	}
	h.closed = true
	return h.acks, h.nacks, h.err
}

// Acked runs the deferred completions, innermost middleware first, and
// returns their errors joined: the message must not be acknowledged at the
// broker unless that is nil. A completion after one that failed still runs
// (its own work is done).
func (h *Hook) Acked() error {
	acks, _, _ := h.settle()
	var errs []error
	for i := range acks {
		if err := acks[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Nacked runs the deferred rollbacks and returns the reason recorded with
// SetErr (nil when none was).
func (h *Hook) Nacked() error {
	_, nacks, err := h.settle()
	for i := range nacks {
		nacks[i]()
	}
	return err
}
