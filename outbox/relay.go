package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// Relay publishes the records of a [Store] through one [publisher.Publisher]
// per destination (a RabbitMQ publisher per exchange, a Kafka publisher per
// topic) and marks them dispatched once the broker confirmed them. Any
// number of relays, in any number of processes, may run on one store: each
// record is claimed by one of them at a time.
//
// Each destination has its own workers ([WithWorkers]). A worker claims a
// batch ([Store.Claim]), publishes it and stores the outcome
// ([Batch.Finish]), then claims the next batch at once if the batch was
// full, and otherwise sleeps until the store announces new records
// ([Store.Listen]) or the poll interval passes ([WithPollInterval]).
//
// # Order
//
// For one destination and one key, a record is handed to the publisher only
// once every record of that key with a smaller Seq has been confirmed by the
// broker or has died; so the first copy of each message reaches the broker in
// Seq order, with any number of relays. A batch holding several records of
// one key publishes them in rounds: round n is one PublishBatch call with
// the n-th record of each key. Records without a key are not ordered.
//
// A record that fails is tried again after a back-off ([WithBackoff]);
// the later records of its key wait for it, records of other keys do not.
// A dead record (invalid, unroutable, or out of attempts) does not hold up
// its key: the records after it are published, and a redrive puts it at the
// end of its key's queue. Messages published again because a confirm was
// lost arrive again later, as duplicates with the same ID that consumers
// drop. What "Seq order" means for transactions enqueueing one key at the
// same time is up to the store (see package pgoutbox).
//
// # Failures
//
// A record whose PublishBatch reported it failed ([publisher.PublishError]
// with its message ID) counts a failed attempt; when the error wraps
// [publisher.ErrInvalid] or [publisher.ErrUnroutable] (or [WithMaxAttempts]
// is reached) it moves to the dead state with the error as its reason. An
// error that does not say which messages failed counts against every
// message of the call, except a validation error ([publisher.ErrInvalid]
// with no message sent), after which the messages are published one by one
// to find the invalid ones. Nothing is marked dispatched that the publisher
// did not confirm, and nothing is deleted before it is dispatched.
//
// A Relay is safe for concurrent use; [Relay.Run] runs once at a time.
type Relay struct {
	store   Store
	pubs    map[string]publisher.Publisher
	cfg     config
	running atomic.Bool
}

// NewRelay returns a relay that publishes the records of store, for each
// destination named in publishers, through its publisher. Records of other
// destinations are left to other relays. It does no I/O.
func NewRelay(store Store, publishers map[string]publisher.Publisher, opts ...Option) (*Relay, error) {
	if store == nil {
		return nil, errors.New("outbox: nil store")
	}
	if len(publishers) == 0 {
		return nil, errors.New("outbox: no publishers")
	}
	pubs := make(map[string]publisher.Publisher, len(publishers))
	for dest, p := range publishers {
		if err := ValidateDestination(dest); err != nil {
			return nil, err
		}
		if p == nil {
			return nil, fmt.Errorf("outbox: destination %q: nil publisher", dest)
		}
		pubs[dest] = p
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	return &Relay{store: store, pubs: pubs, cfg: cfg}, nil
}

// ErrRunning is returned by [Relay.Run] when the relay is already running.
var ErrRunning = errors.New("outbox: relay already running")

// Run publishes records until ctx is done, then returns nil once every
// batch in progress has been finished: its confirmed records are marked
// dispatched and the others are released unchanged (an attempt cut short by
// the stop does not count). Store and broker failures do not end it: they
// are logged and retried with back-off. It returns [ErrRunning] when
// called while running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	wakes := make(map[string][]chan struct{}, len(r.pubs))
	var workers []*worker
	for dest, pub := range r.pubs {
		for range r.cfg.workers {
			w := &worker{r: r, dest: dest, pub: pub, wake: make(chan struct{}, 1)}
			wakes[dest] = append(wakes[dest], w.wake)
			workers = append(workers, w)
		}
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { r.listen(ctx, wakes) })
	wg.Wait()
	return nil
}

// listen wakes the workers of each destination the store announces, and
// listens again after a failure.
func (r *Relay) listen(ctx context.Context, wakes map[string][]chan struct{}) {
	notify := func(chs []chan struct{}) {
		for _, ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	wake := func(dest string) {
		if dest != "" {
			notify(wakes[dest])
			return
		}
		for _, chs := range wakes {
			notify(chs)
		}
	}
	failures := 0
	for {
		began := time.Now()
		err := r.store.Listen(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > r.cfg.maxBackoff {
			failures = 0
		}
		failures++
		if err == nil {
			err = errors.New("stopped listening")
		}
		r.cfg.logger.Warn("outbox: listening for new records failed; polling meanwhile", "err", err)
		if !sleep(ctx, r.cfg.backoff(failures)) {
			return
		}
	}
}

// backoff returns the wait after the n-th consecutive failure (n >= 1):
// minBackoff doubled n-1 times, capped at maxBackoff, drawn between half
// and all of it.
func (c *config) backoff(n int) time.Duration {
	d := c.maxBackoff
	if n <= 30 {
		if b := c.minBackoff << (n - 1); b > 0 && b < d {
			d = b
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type worker struct {
	r    *Relay
	dest string
	pub  publisher.Publisher
	wake chan struct{}
}

func (w *worker) run(ctx context.Context) {
	cfg := &w.r.cfg
	failures := 0
	for ctx.Err() == nil {
		st, err := w.cycle(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := cfg.poll
		switch {
		case err != nil:
			failures++
			wait = cfg.backoff(failures)
			cfg.logger.Warn("outbox: relay batch failed", "destination", w.dest, "err", err, "retry_in", wait)
		case st.claimed > 0 && st.dispatched == 0 && st.dead == 0:
			// Nothing got through (a broker outage, a closed publisher):
			// do not run through the whole backlog failing.
			failures++
			wait = cfg.backoff(failures)
		case st.claimed >= cfg.batchSize:
			failures = 0
			continue
		default:
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-w.wake:
			if failures > 0 {
				// An announcement does not end a back-off.
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
		}
		t.Stop()
	}
}

// stats is what one cycle did.
type stats struct{ claimed, dispatched, dead int }

// result is what happened to one record of a batch.
type result struct {
	done  bool  // confirmed
	err   error // the failure, when not confirmed (nil: untouched)
	dead  bool
	delay time.Duration
}

// cycle claims one batch, publishes it and stores the outcome.
func (w *worker) cycle(ctx context.Context) (st stats, err error) {
	b, err := w.r.store.Claim(ctx, w.dest, w.r.cfg.batchSize)
	if err != nil {
		return st, err
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	finished := false
	defer func() {
		if !finished { // a publisher panicked: give the records back
			_ = b.Finish(fctx, Outcome{})
		}
	}()
	recs := b.Records()
	st.claimed = len(recs)
	if len(recs) == 0 {
		finished = true
		return st, b.Finish(fctx, Outcome{})
	}
	res, closed := w.publish(ctx, recs)
	var o Outcome
	var failed int
	var firstErr error
	for i := range recs {
		r := &res[i]
		switch {
		case r.done:
			o.Dispatched = append(o.Dispatched, recs[i].Seq)
		case r.err == nil:
		case r.dead:
			o.Dead = append(o.Dead, Failure{Seq: recs[i].Seq, Reason: r.err.Error()})
		default:
			o.Retry = append(o.Retry, Failure{Seq: recs[i].Seq, Reason: r.err.Error(), Delay: r.delay})
			if firstErr == nil {
				firstErr = r.err
			}
			failed++
		}
	}
	finished = true
	if err := b.Finish(fctx, o); err != nil {
		return st, fmt.Errorf("storing the outcome of %d records (they will be published again): %w", len(recs), err)
	}
	st.dispatched, st.dead = len(o.Dispatched), len(o.Dead)
	log := w.r.cfg.logger
	if closed {
		log.Error("outbox: the destination's publisher is closed; its records wait", "destination", w.dest)
	}
	if failed > 0 {
		log.Warn("outbox: publishing failed; retrying after back-off", "destination", w.dest, "records", failed, "err", firstErr)
	}
	obs := w.r.cfg.observer
	for i := range recs {
		r := &res[i]
		switch {
		case r.done:
			if obs != nil {
				obs.Dispatched(ctx, &recs[i])
			}
		case r.err != nil:
			if r.dead {
				log.Error("outbox: record is dead", "destination", w.dest, "seq", recs[i].Seq,
					"message_id", recs[i].ID, "type", recs[i].Type, "err", r.err)
			}
			if obs != nil {
				obs.Failed(ctx, &recs[i], r.err, r.dead)
			}
		}
	}
	return st, nil
}

// group is the records of one key in a batch (or one record without a
// key), in Seq order, and how far publishing got.
type group struct {
	recs []int
	pos  int
}

// publish publishes recs in rounds — the n-th record of each key in round
// n — and returns what happened to each, and whether the publisher said it
// is closed.
func (w *worker) publish(ctx context.Context, recs []Record) (res []result, closed bool) {
	res = make([]result, len(recs))
	var groups []*group
	byKey := make(map[string]*group)
	for i := range recs {
		if recs[i].Key == nil {
			groups = append(groups, &group{recs: []int{i}})
			continue
		}
		g := byKey[string(recs[i].Key)]
		if g == nil {
			g = &group{}
			byKey[string(recs[i].Key)] = g
			groups = append(groups, g)
		}
		g.recs = append(g.recs, i)
	}
	// The stored IDs are final: no lineage from ctx may change them.
	pctx := lineage.NewContext(ctx, lineage.Lineage{})
	cfg := &w.r.cfg
	for active := groups; len(active) > 0 && ctx.Err() == nil; {
		idx := make([]int, len(active))
		for j, g := range active {
			idx[j] = g.recs[g.pos]
		}
		errs := w.send(pctx, recs, idx)
		var next []*group
		for j, g := range active {
			i, err := idx[j], errs[j]
			switch {
			case err == nil:
				res[i].done = true
			case ctx.Err() != nil:
				continue // stopping: not the record's failure; it stays as it was
			case errors.Is(err, publisher.ErrClosed):
				closed = true // nothing to publish with: not the record's failure either
				continue
			case errors.Is(err, publisher.ErrInvalid) || errors.Is(err, publisher.ErrUnroutable):
				res[i] = result{err: err, dead: true}
			case cfg.maxAttempts > 0 && recs[i].Attempts+1 >= cfg.maxAttempts:
				res[i] = result{err: fmt.Errorf("outbox: %d failed attempts, the last: %w", recs[i].Attempts+1, err), dead: true}
			default:
				res[i] = result{err: err, delay: cfg.backoff(recs[i].Attempts + 1)}
				continue // the later records of the key wait
			}
			if g.pos++; g.pos < len(g.recs) {
				next = append(next, g)
			}
		}
		active = next
	}
	return res, closed
}

// send publishes recs[i] for each i in idx in one PublishBatch call and
// returns the error of each (nil: confirmed).
func (w *worker) send(ctx context.Context, recs []Record, idx []int) []error {
	msgs := make([]publisher.Message, len(idx))
	for j, i := range idx {
		msgs[j] = recs[i].Message()
	}
	ctx, cancel := context.WithTimeout(ctx, w.r.cfg.publishTimeout)
	defer cancel()
	errs := make([]error, len(msgs))
	err := w.pub.PublishBatch(ctx, msgs...)
	if err == nil {
		return errs
	}
	if byID, ok := publishErrors(err); ok {
		for j := range msgs {
			errs[j] = byID[msgs[j].ID]
		}
		return errs
	}
	if len(msgs) > 1 && errors.Is(err, publisher.ErrInvalid) {
		// PublishBatch validates every message before sending any: find
		// the invalid ones, publishing the others.
		for j := range msgs {
			errs[j] = w.pub.Publish(ctx, msgs[j])
		}
		return errs
	}
	for j := range errs {
		errs[j] = err
	}
	return errs
}

// publishErrors returns the failures err reports per message ID, and
// whether err consists of [publisher.PublishError]s only (joined, possibly
// wrapped): only then can the messages it does not name be taken as
// confirmed.
func publishErrors(err error) (map[uuid.UUID]error, bool) {
	byID := make(map[uuid.UUID]error)
	var walk func(error) bool
	walk = func(err error) bool {
		switch e := err.(type) {
		case nil:
			return false
		case *publisher.PublishError:
			byID[e.MessageID] = e
			return true
		case interface{ Unwrap() []error }:
			errs := e.Unwrap()
			for _, c := range errs {
				if !walk(c) {
					return false
				}
			}
			return len(errs) > 0
		case interface{ Unwrap() error }:
			return walk(e.Unwrap())
		}
		return false
	}
	if !walk(err) {
		return nil, false
	}
	return byID, true
}
