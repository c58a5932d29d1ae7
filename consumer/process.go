package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Outcome is what a transport loop must do with a delivery after
// [Processor.Process].
type Outcome int

const (
	// OutcomeAck: the handler succeeded (or the message is a duplicate):
	// acknowledge or commit it.
	OutcomeAck Outcome = iota + 1
	// OutcomeDeadLetter: store the message in the dead letter with the
	// returned reason, then acknowledge it — never before the dead letter
	// is stored.
	OutcomeDeadLetter
	// OutcomeAbandon: the consumer is stopping; neither acknowledge nor
	// commit, the broker delivers the message again.
	OutcomeAbandon
)

// String returns "ack", "dead letter", "abandon" or "retry".
func (o Outcome) String() string {
	switch o {
	case OutcomeRetry:
		return "retry"
	case OutcomeAck:
		return "ack"
	case OutcomeDeadLetter:
		return "dead letter"
	case OutcomeAbandon:
		return "abandon"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Processor runs a handler chain for one delivery under the retry policy
// the transport loops share: a failure is retried in place with exponential
// backoff, without moving past the message; a [Permanent] error, or any
// other error on the MaxAttempts-th run of the handler, asks for the dead
// letter; an [ErrInFlight] or [ErrStore] error waits (for the holder's
// lease, for the store) without counting an attempt, since the message must
// wait rather than be dropped.
//
// A transport calls [Processor.Begin], then Process, then, once it has
// acknowledged, dead-lettered or handed back the message, [Processor.End];
// the Observer sees each step. Build it with [Settings.Processor], or set
// the fields; Handler is required. It is safe for concurrent use; each
// delivery has its own state.
type Processor struct {
	// Handler is the handler chain.
	Handler Handler
	// MaxAttempts bounds the runs of the handler for ordinary errors (0:
	// [DefaultMaxAttempts]).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts (0: the
	// defaults).
	MinBackoff, MaxBackoff time.Duration
	// Observer receives the delivery's events; nil: none.
	Observer Observer
}

// Processor returns the Processor of these settings for the handler chain
// h, with the logger and observers of the settings.
func (s *Settings) Processor(h Handler) *Processor {
	return &Processor{
		Handler:     h,
		MaxAttempts: s.MaxAttempts,
		MinBackoff:  s.MinBackoff,
		MaxBackoff:  s.MaxBackoff,
		Observer:    JoinObservers(LogObserver(s.Logger, s.MaxAttempts), s.Observer),
	}
}

// Begin starts the delivery of m: it notes the time and gives the Observer
// its DeliveryStart. The handler runs with the returned context (pass it to
// Process as work) and End receives it.
func (p *Processor) Begin(ctx context.Context, m *Message) context.Context {
	m.state.start = time.Now()
	m.state.begun = true
	if p.Observer != nil {
		return p.Observer.DeliveryStart(ctx, m)
	}
	return ctx
}

// End reports how the delivery of m ended, with ctx from Begin: outcome is
// what the transport did ([OutcomeAck]: acknowledged, a processed message
// or a duplicate; [OutcomeDeadLetter]: its dead letter is stored;
// [OutcomeAbandon]: handed back), err the dead-letter reason or why it was
// handed back.
func (p *Processor) End(ctx context.Context, m *Message, outcome Outcome, err error) {
	if p.Observer == nil {
		return
	}
	d := Delivery{Err: err, Attempts: m.state.runs}
	if m.state.begun {
		d.Duration = time.Since(m.state.start)
	}
	switch outcome {
	case OutcomeAck:
		d.Result, d.Err = Processed, nil
		if m.state.duplicate {
			d.Result = Duplicate
		}
	case OutcomeDeadLetter:
		d.Result = DeadLettered
	default:
		d.Result = Abandoned
	}
	p.Observer.DeliveryDone(ctx, m, d)
}

// Process runs the handler for m until it succeeds, asks for the dead
// letter, or stop is done. The handler runs with work, which a graceful
// shutdown leaves alive so the current attempt can finish; stop ends the
// waiting between attempts. The returned error is the last handler error
// (the dead-letter reason for [OutcomeDeadLetter]).
func (p *Processor) Process(stop, work context.Context, m *Message) (Outcome, error) {
	return p.run(stop, work, m, nil)
}

// ran is the result of a run of the chain made elsewhere (in a batch),
// which run takes as its first attempt.
type ran struct {
	err   error
	start time.Time
}

// run is Process, starting from the result of an attempt already made
// when first is not nil.
func (p *Processor) run(stop, work context.Context, m *Message, first *ran) (Outcome, error) {
	var b backoff.BackOff // made on the first failure only
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var err error
		var start time.Time
		if first != nil {
			err, start = first.err, first.start
			first = nil
		} else {
			start, err = p.attempt(work, m, nil)
		}
		out, a := p.judge(work, m, err, start)
		if out != OutcomeRetry {
			return out, err
		}
		if b == nil {
			b = p.Backoff()
		}
		a.Wait = b.NextBackOff()
		var inFlight *InFlightError
		if errors.As(err, &inFlight) && !inFlight.Until.IsZero() {
			if d := time.Until(inFlight.Until); d > 0 && d < a.Wait {
				a.Wait = d
			}
		}
		if p.Observer != nil {
			p.Observer.AttemptDone(work, m, a)
		}
		if timer == nil {
			timer = time.NewTimer(a.Wait)
		} else {
			timer.Reset(a.Wait)
		}
		select {
		case <-stop.Done():
			return OutcomeAbandon, err
		case <-work.Done():
			return OutcomeAbandon, err
		case <-timer.C:
		}
	}
}

// attempt runs the chain for m once, with slot as the batch's part in it
// (nil outside a batch), and counts the run when the handler was reached.
func (p *Processor) attempt(ctx context.Context, m *Message, slot *batchSlot) (time.Time, error) {
	m.state.attempt = attemptState{}
	m.state.batch = slot
	m.Attempt = m.state.runs + 1
	start := time.Now()
	err := p.handle(ctx, m)
	if !m.state.attempt.skipped {
		m.state.runs++
	}
	m.state.batch = nil
	return start, err
}

// judge says what follows an attempt of m that ended with err: OutcomeAck,
// OutcomeAbandon (ctx ended), OutcomeDeadLetter (a permanent error, or the
// last allowed attempt failed; the failure is counted) or OutcomeRetry,
// with the Attempt to report (its Wait left to the caller).
func (p *Processor) judge(ctx context.Context, m *Message, err error, start time.Time) (Outcome, Attempt) {
	m.Attempt = max(m.state.runs, 1)
	if err == nil {
		m.state.duplicate = m.state.attempt.duplicate
		return OutcomeAck, Attempt{}
	}
	if ctx.Err() != nil {
		return OutcomeAbandon, Attempt{}
	}
	a := Attempt{Next: NextRetry, Err: err, Duration: time.Since(start), LeaseLost: m.state.attempt.leaseLost}
	switch {
	case errors.Is(err, ErrInFlight):
		a.Next = NextWaitLease
	case Waiting(err):
		a.Next = NextWaitStore
	default:
		maxAttempts := p.MaxAttempts
		if maxAttempts <= 0 {
			maxAttempts = DefaultMaxAttempts
		}
		m.state.failures++
		if ShouldDeadLetter(err, m.state.failures, maxAttempts) {
			return OutcomeDeadLetter, a
		}
	}
	return OutcomeRetry, a
}

// handle runs the handler; a panic that escaped the chain (no [Recover])
// becomes an error rather than crashing the consumer.
func (p *Processor) handle(ctx context.Context, m *Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return p.Handler.Handle(ctx, m)
}

// Backoff returns the wait policy of p for anything else a loop retries
// (dead-letter publishes, reconnects).
func (p *Processor) Backoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(p.MinBackoff, DefaultMinBackoff)
	b.MaxInterval = orDefault(p.MaxBackoff, DefaultMaxBackoff)
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
