package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
)

// batchSlot is what a batch prepared for one message's first run through
// the dedupe layer.
type batchSlot struct {
	claim   dedupe.Claim // made by ClaimBatch (BatchStore)
	claimed bool         // claim is set
	inTx    bool         // running inside BatchInbox.ProcessBatch: the inbox layer only calls next
	pending bool         // the handler succeeded; its completion is left to the batch
	used    bool         // the dedupe layer took the claim (a layer above it may answer first)
}

// errBatchStopped is what the members of a BatchInbox group after a failed
// one return, and those that would start once the consumer is stopping:
// they are rolled back and processed one by one afterwards (or handed
// back), so that a later message never takes effect before an earlier one.
var errBatchStopped = errors.New("consumer: batch stopped at an earlier failure")

// ProcessBatch processes ms, deliveries that must take effect in this order
// (the records of one Kafka partition, say), as [Processor.Process] would
// process each in turn, but with the dedupe store's batch operations when
// the chain's [Dedupe] layer has a [dedupe.BatchStore] (claims in one round
// trip, handlers in order, completions in one round trip) or a
// [dedupe.BatchInbox] (one transaction, a savepoint per message). ctxs[i]
// is the context ms[i]'s handler runs with (from [Processor.Begin]; all
// derived from work). It returns what Process would return for each
// message it processed, and returns only when each of them is settled:
// acknowledge each OutcomeAck, dead-letter each OutcomeDeadLetter, hand
// back each OutcomeAbandon — and never acknowledge before ProcessBatch
// returns.
//
// A message that asks for the dead letter ends the batch: ProcessBatch
// returns the outcomes up to and including it (shorter slices than ms) and
// starts none of the later messages, so that no later message takes effect
// before that dead letter is stored. Store it, then pass the rest (ms and
// ctxs from len(outcomes) on) to ProcessBatch again.
//
// Once stop is done (the consumer is stopping), the message in progress
// finishes but no later one starts: each is handed back (OutcomeAbandon),
// its claim released.
//
// A message that fails, waits for another consumer's lease or meets a store
// error leaves the batch: it and every later message are then processed one
// by one with Process, so a failure affects only its own message and order
// holds. Without a batch-capable store, ProcessBatch is Process for each
// message in turn.
func (p *Processor) ProcessBatch(stop, work context.Context, ctxs []context.Context, ms []*Message) ([]Outcome, []error) {
	outs := make([]Outcome, len(ms))
	errs := make([]error, len(ms))
	done := 0 // messages settled by the batch
	var failed *ran
	if len(ms) > 1 {
		switch d := p.dedupeLayer().(type) {
		case *dedupeHandler:
			if bs, ok := d.store.(dedupe.BatchStore); ok {
				done, failed = p.storeBatch(stop, work, ctxs, ms, d, bs)
			}
		case *inboxHandler:
			if bi, ok := d.inbox.(dedupe.BatchInbox); ok {
				done, failed = p.inboxBatch(stop, work, ctxs, ms, d, bi)
			}
		}
	}
	for i := range done {
		outs[i] = OutcomeAck
	}
	for i := done; i < len(ms); i++ {
		first := failed
		if i != done {
			first = nil
		}
		if (i > done && outs[i-1] == OutcomeAbandon) || (i > 0 && first == nil && stop.Err() != nil) {
			// Stopping: nothing after an abandoned message may go ahead,
			// and no new message starts.
			outs[i], errs[i] = OutcomeAbandon, fmt.Errorf("consumer: %w", context.Canceled)
			continue
		}
		outs[i], errs[i] = p.run(stop, ctxs[i], ms[i], first)
		if outs[i] == OutcomeDeadLetter {
			return outs[:i+1], errs[:i+1]
		}
	}
	return outs, errs
}

// storeBatch claims ms in one round trip and runs the chain for each in
// order until one fails; then it completes the successful ones in one round
// trip. It returns how many leading messages are settled (handled or
// duplicates, completions stored) and, when the message at that index ran
// and failed, that run's result.
func (p *Processor) storeBatch(stop, work context.Context, ctxs []context.Context, ms []*Message, d *dedupeHandler, bs dedupe.BatchStore) (int, *ran) {
	keys := make([]dedupe.Key, len(ms))
	for i, m := range ms {
		keys[i] = dedupe.Key{Scope: d.scope, ID: m.ID}
	}
	claims, err := bs.ClaimBatch(work, keys, d.lease)
	if err != nil || len(claims) != len(ms) {
		return 0, nil // one by one: each meets the store on its own
	}
	stoppedAt, failed := len(ms), (*ran)(nil)
	var stoppedSlot *batchSlot // the slot of the last member run
	for i, m := range ms {
		if claims[i].Status == dedupe.InFlight || (i > 0 && stop.Err() != nil) {
			// Waits for the holder's lease, outside the batch; or the
			// consumer is stopping and no new message starts.
			stoppedAt = i
			break
		}
		slot := &batchSlot{claim: claims[i], claimed: true}
		start, err := p.attempt(ctxs[i], m, slot)
		stoppedSlot = slot
		if err != nil || (claims[i].Status == dedupe.Acquired && !slot.pending) {
			stoppedAt, failed = i, &ran{err: err, start: start}
			if err == nil { // a chain that answered without reaching the dedupe layer
				failed = nil
			}
			break
		}
		m.state.duplicate = m.state.attempt.duplicate
	}
	// Give back the claims the batch took and will not use.
	var unused []dedupe.Claim
	for i := stoppedAt + 1; i < len(ms); i++ {
		if claims[i].Status == dedupe.Acquired {
			unused = append(unused, claims[i])
		}
	}
	if stoppedAt < len(ms) && claims[stoppedAt].Status == dedupe.Acquired && (failed == nil || !stoppedSlot.used) {
		// Not run, or refused by a layer above dedupe before the claim was
		// used (the dedupe layer releases the claims it used).
		unused = append(unused, claims[stoppedAt])
	}
	if len(unused) > 0 {
		rctx, cancel := detached(work, storeCallTimeout)
		_, _ = bs.ReleaseBatch(rctx, unused) // else the leases run out
		cancel()
	}
	// Complete the successful ones together; a completion that fails is
	// retried alone with its claim, as the dedupe layer does.
	var pending []dedupe.Claim
	var owners []int
	for i := range stoppedAt {
		if claims[i].Status == dedupe.Acquired {
			pending = append(pending, claims[i])
			owners = append(owners, i)
		}
	}
	settled := stoppedAt
	if len(pending) > 0 {
		cerrs := d.completeAll(work, ctxs, bs, pending, owners)
		for k, i := range owners {
			if cerr := cerrs[k]; cerr != nil && i < settled {
				// The work of ms[i] is done but not recorded: it waits as
				// the dedupe layer's own completion failure would, and every
				// later message is settled one by one after it (those whose
				// completion is stored then answer as duplicates).
				ms[i].state.attempt.leaseLost = errors.Is(cerr, dedupe.ErrLeaseLost)
				settled = i
				failed = &ran{err: &storeError{fmt.Errorf("complete %s: %w", ms[i].ID, cerr)}, start: time.Now()}
			}
		}
	}
	return settled, failed
}

// inboxBatch runs ms in one BatchInbox transaction. It returns how many
// leading messages committed (or were duplicates) and the failed run of the
// message at that index, if it ran.
func (p *Processor) inboxBatch(stop, work context.Context, ctxs []context.Context, ms []*Message, d *inboxHandler, bi dedupe.BatchInbox) (int, *ran) {
	keys := make([]dedupe.Key, len(ms))
	for i, m := range ms {
		keys[i] = dedupe.Key{Scope: d.scope, ID: m.ID}
	}
	stopped := -1 // the first member that failed
	next := 0     // the member fn expects next: one it skips was not acquired
	halted := false
	var failed *ran
	starts := make([]time.Time, len(ms))
	results, err := bi.ProcessBatch(work, keys, d.lease, d.retention, func(txCtx context.Context, i int) error {
		// A key skipped before i is a duplicate or held by another
		// consumer; fn cannot tell which, and the message after one in
		// flight must wait for it: the group stops there and the rest is
		// processed one by one.
		if stopped >= 0 || halted || i != next || (i > 0 && stop.Err() != nil) {
			halted = true
			return errBatchStopped
		}
		next = i + 1
		var herr error
		starts[i], herr = p.attemptInTx(txCtx, ctxs[i], ms[i])
		if herr != nil {
			stopped, failed = i, &ran{err: herr, start: starts[i]}
		}
		return herr
	})
	if err != nil || len(results) != len(ms) {
		// The group did not commit (a deferred constraint, a lost lease, a
		// store failure): every message is processed again one by one, where
		// a member's own failure shows. Its run in the group does not count.
		for i := range ms {
			if !starts[i].IsZero() {
				ms[i].state.runs--
			}
		}
		return 0, nil
	}
	for i, r := range results {
		switch {
		case r.Claim.Status == dedupe.Duplicate:
			ms[i].state.attempt.duplicate = true
			ms[i].state.duplicate = true
		case r.Claim.Status == dedupe.InFlight:
			return i, nil
		case r.Err != nil:
			if i == stopped {
				return i, failed
			}
			// Stopped behind an earlier failure, or failed in a way only
			// the store saw: rolled back, processed again one by one.
			if !starts[i].IsZero() {
				ms[i].state.runs--
			}
			return i, nil
		}
	}
	return len(ms), nil
}

// completeAll completes the claims of a batch in one round trip;
// owners[k] is the index in the batch (and in ctxs) of claims[k]. A
// completion that fails is retried alone with its claim, as the dedupe
// layer does, so a passing store error does not run a handler again. It
// returns each claim's final error.
func (d *dedupeHandler) completeAll(work context.Context, ctxs []context.Context, bs dedupe.BatchStore, claims []dedupe.Claim, owners []int) []error {
	cctx, cancel := detached(work, storeCallTimeout)
	cerrs, err := bs.CompleteBatch(cctx, claims, d.retention)
	cancel()
	out := make([]error, len(claims))
	for k, i := range owners {
		cerr := err
		if err == nil && len(cerrs) == len(claims) {
			cerr = cerrs[k]
		} else if err == nil {
			cerr = errors.New("consumer: CompleteBatch answered for the wrong number of claims")
		}
		if cerr != nil && !errors.Is(cerr, dedupe.ErrLeaseLost) {
			cerr = d.complete(ctxs[i], claims[k])
		}
		out[k] = cerr
	}
	return out
}

// attemptInTx runs the chain for m once inside a BatchInbox group: with
// txCtx's transaction and cancellation and the values of m's own context.
// The run counts whatever the chain answers (the group may take it back).
func (p *Processor) attemptInTx(txCtx, ctx context.Context, m *Message) (time.Time, error) {
	m.state.attempt = attemptState{}
	m.state.batch = &batchSlot{inTx: true}
	m.Attempt = m.state.runs + 1
	start := time.Now()
	err := p.handle(overlay{Context: txCtx, values: ctx}, m)
	m.state.runs++
	m.state.batch = nil
	return start, err
}

// dedupeLayer returns the chain's dedupe layer when the layers above it are
// this package's own (which a batch can run as usual), or nil.
func (p *Processor) dedupeLayer() Handler {
	h := p.Handler
	for h != nil {
		l, ok := h.(layer)
		if !ok {
			return nil
		}
		kind, next := l.layerInfo()
		if kind == layerDedupe {
			return h
		}
		h = next
	}
	return nil
}

// overlay is a context whose deadline and cancellation are its Context's
// (the batch transaction's) and whose values are looked up there first and
// then in values (the message's own context: its trace span, say).
type overlay struct {
	context.Context
	values context.Context
}

func (o overlay) Value(key any) any {
	if v := o.Context.Value(key); v != nil {
		return v
	}
	return o.values.Value(key)
}

// OutcomeRetry is what [Processor.TryBatch] answers for a message that
// failed (or waits for another consumer's lease or for the store) and is
// not settled: process it again later with [Processor.Process], which
// goes on counting its attempts.
const OutcomeRetry Outcome = OutcomeAbandon + 1

// TryBatch runs ms once each, in no particular order, with the dedupe
// store's batch operations where the chain's [Dedupe] layer allows them —
// for deliveries that need no order among themselves (a RabbitMQ prefetch
// window; see [Processor.ProcessBatch] for ordered ones). ctxs[i] is the
// context ms[i]'s handler runs with (from [Processor.Begin]). For each
// message it returns [OutcomeAck] (processed or a duplicate: its completion
// is stored), [OutcomeDeadLetter] (a permanent error, or the last allowed
// attempt failed), [OutcomeRetry] (it failed or waits: call Process for it
// later, after a backoff; errs[i] says why) or [OutcomeAbandon] (stop was
// done before it started: hand it back). A message's failure affects no
// other message. Acknowledge only after TryBatch returned.
func (p *Processor) TryBatch(stop, work context.Context, ctxs []context.Context, ms []*Message) ([]Outcome, []error) {
	outs := make([]Outcome, len(ms))
	errs := make([]error, len(ms))
	if len(ms) > 1 {
		switch d := p.dedupeLayer().(type) {
		case *dedupeHandler:
			if bs, ok := d.store.(dedupe.BatchStore); ok {
				p.storeTry(stop, work, ctxs, ms, d, bs, outs, errs)
			}
		case *inboxHandler:
			if bi, ok := d.inbox.(dedupe.BatchInbox); ok {
				p.inboxTry(stop, work, ctxs, ms, d, bi, outs, errs)
			}
		}
	}
	for i := range ms {
		if outs[i] != 0 {
			continue
		}
		if i > 0 && stop.Err() != nil {
			outs[i], errs[i] = OutcomeAbandon, fmt.Errorf("consumer: %w", context.Canceled)
			continue
		}
		start, err := p.attempt(ctxs[i], ms[i], nil)
		outs[i], errs[i] = p.classify(ctxs[i], ms[i], err, start)
	}
	return outs, errs
}

// classify is judge for TryBatch: a message to retry is reported to the
// observer with the first backoff as its wait, and handed back.
func (p *Processor) classify(ctx context.Context, m *Message, err error, start time.Time) (Outcome, error) {
	out, a := p.judge(ctx, m, err, start)
	if out == OutcomeRetry && p.Observer != nil {
		a.Wait = orDefault(p.MinBackoff, DefaultMinBackoff)
		p.Observer.AttemptDone(ctx, m, a)
	}
	if out == OutcomeAck {
		return out, nil
	}
	return out, err
}

// storeTry is TryBatch's BatchStore path: claims in one round trip, every
// member run once, completions in one round trip. It fills outs and errs
// for the members it settled or tried; a failed ClaimBatch leaves them all
// to be tried one by one.
func (p *Processor) storeTry(stop, work context.Context, ctxs []context.Context, ms []*Message, d *dedupeHandler, bs dedupe.BatchStore, outs []Outcome, errs []error) {
	keys := make([]dedupe.Key, len(ms))
	for i, m := range ms {
		keys[i] = dedupe.Key{Scope: d.scope, ID: m.ID}
	}
	claims, err := bs.ClaimBatch(work, keys, d.lease)
	if err != nil || len(claims) != len(ms) {
		return
	}
	var unused, pending []dedupe.Claim
	var owners []int
	for i, m := range ms {
		if i > 0 && stop.Err() != nil {
			if claims[i].Acquired() {
				unused = append(unused, claims[i])
			}
			outs[i], errs[i] = OutcomeAbandon, fmt.Errorf("consumer: %w", context.Canceled)
			continue
		}
		if claims[i].Status == dedupe.InFlight {
			m.state.attempt = attemptState{skipped: true}
			outs[i], errs[i] = p.classify(ctxs[i], m, &InFlightError{ID: m.ID, Until: claims[i].Until}, time.Now())
			continue
		}
		slot := &batchSlot{claim: claims[i], claimed: true}
		start, err := p.attempt(ctxs[i], m, slot)
		switch {
		case err != nil:
			if claims[i].Acquired() && !slot.used {
				// A layer above dedupe (the ID check) refused the message:
				// its claim was never used, give it back.
				unused = append(unused, claims[i])
			} // otherwise the dedupe layer released it
			outs[i], errs[i] = p.classify(ctxs[i], m, err, start)
		case claims[i].Acquired() && !slot.pending:
			// The chain answered without reaching the dedupe layer.
			unused = append(unused, claims[i])
			outs[i], errs[i] = p.classify(ctxs[i], m, nil, start)
		case claims[i].Acquired():
			pending = append(pending, claims[i])
			owners = append(owners, i)
		default: // a duplicate
			outs[i], errs[i] = p.classify(ctxs[i], m, nil, start)
		}
	}
	if len(unused) > 0 {
		rctx, cancel := detached(work, storeCallTimeout)
		_, _ = bs.ReleaseBatch(rctx, unused) // else the leases run out
		cancel()
	}
	if len(pending) == 0 {
		return
	}
	cerrs := d.completeAll(work, ctxs, bs, pending, owners)
	for k, i := range owners {
		if cerr := cerrs[k]; cerr != nil {
			ms[i].state.attempt.leaseLost = errors.Is(cerr, dedupe.ErrLeaseLost)
			outs[i], errs[i] = p.classify(ctxs[i], ms[i], &storeError{fmt.Errorf("complete %s: %w", ms[i].ID, cerr)}, time.Now())
			continue
		}
		outs[i], errs[i] = p.classify(ctxs[i], ms[i], nil, time.Now())
	}
}

// inboxTry is TryBatch's BatchInbox path: one transaction, a savepoint per
// member, every acquired member run once. A group that does not commit
// leaves every member to be tried one by one.
func (p *Processor) inboxTry(stop, work context.Context, ctxs []context.Context, ms []*Message, d *inboxHandler, bi dedupe.BatchInbox, outs []Outcome, errs []error) {
	keys := make([]dedupe.Key, len(ms))
	for i, m := range ms {
		keys[i] = dedupe.Key{Scope: d.scope, ID: m.ID}
	}
	starts := make([]time.Time, len(ms))
	results, err := bi.ProcessBatch(work, keys, d.lease, d.retention, func(txCtx context.Context, i int) error {
		if i > 0 && stop.Err() != nil {
			return errBatchStopped
		}
		var herr error
		starts[i], herr = p.attemptInTx(txCtx, ctxs[i], ms[i])
		return herr
	})
	if err != nil || len(results) != len(ms) {
		// The group did not commit: each member is tried alone, where its
		// own failure shows; its run in the group does not count.
		for i := range ms {
			if !starts[i].IsZero() {
				ms[i].state.runs--
			}
		}
		return
	}
	for i, r := range results {
		m := ms[i]
		switch {
		case r.Claim.Status == dedupe.Duplicate:
			m.state.attempt = attemptState{skipped: true, duplicate: true}
			outs[i], errs[i] = p.classify(ctxs[i], m, nil, time.Now())
		case r.Claim.Status == dedupe.InFlight:
			m.state.attempt = attemptState{skipped: true}
			outs[i], errs[i] = p.classify(ctxs[i], m, &InFlightError{ID: m.ID, Until: r.Claim.Until}, time.Now())
		case errors.Is(r.Err, errBatchStopped) && starts[i].IsZero():
			outs[i], errs[i] = OutcomeAbandon, fmt.Errorf("consumer: %w", context.Canceled)
		case r.Err != nil:
			outs[i], errs[i] = p.classify(ctxs[i], m, r.Err, starts[i])
		default:
			outs[i], errs[i] = p.classify(ctxs[i], m, nil, starts[i])
		}
	}
}
