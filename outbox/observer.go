package outbox

import (
	"context"

	"github.com/uuidforge/uuidforge/internal/fanout"
)

// Observer receives the relay's events, for metrics. Its methods run
// synchronously on the relay's workers: they must be quick and safe for
// concurrent use. For the state of the whole outbox (pending records and
// the age of the oldest), ask the store (pgoutbox.Store.Backlog).
type Observer interface {
	// Dispatched is called for each record the broker confirmed, once the
	// store marked it dispatched. time.Since(r.CreatedAt) is its
	// enqueue-to-published latency (across the clocks of the store and the
	// relay's machine).
	Dispatched(ctx context.Context, r *Record)
	// Failed is called for each record whose attempt failed with err, once
	// the store recorded it: dead reports whether the record moved to the
	// dead state; otherwise it is tried again after its back-off.
	Failed(ctx context.Context, r *Record, err error, dead bool)
}

// JoinObservers returns an Observer that passes every event to each of obs
// in order, skipping nil ones; nil when none is left.
func JoinObservers(obs ...Observer) Observer {
	all := fanout.Flatten[Observer, multiObserver](obs)
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	return all
}

type multiObserver []Observer

func (m multiObserver) Dispatched(ctx context.Context, r *Record) {
	for _, o := range m {
		o.Dispatched(ctx, r)
	}
}

func (m multiObserver) Failed(ctx context.Context, r *Record, err error, dead bool) {
	for _, o := range m {
		o.Failed(ctx, r, err, dead)
	}
}
