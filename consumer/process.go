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
	// OutcomeAck: the handler succeeded (or the message is a duplicate): acknowledge
	// or commit it.
	OutcomeAck Outcome = iota + 1
	// OutcomeDeadLetter: store the message in the dead letter with the returned
	// reason, then acknowledge it — never before the dead letter is stored.
	OutcomeDeadLetter
	// OutcomeAbandon: the consumer is stopping; neither acknowledge nor commit, the
	// broker delivers the message again.
	OutcomeAbandon
)

// String returns "ack", "dead letter" or "abandon".
func (o Outcome) String() string {
	switch o {
	case OutcomeAck:
		return "ack"
	case OutcomeDeadLetter:
		return "dead letter"
	case OutcomeAbandon:
		return "abandon"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Defaults of the retry policy shared by the transport loops.
const (
	DefaultMaxAttempts = 5
	DefaultMinBackoff  = 50 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// Processor runs a handler for one delivery under the retry policy the
// transport loops share: a failure is retried in place with exponential
// backoff, without moving past the message; a [Permanent] error, or any
// other error on the MaxAttempts-th attempt, asks for the dead letter; an
// [ErrInFlight] or [ErrStore] error is retried without limit (waiting until
// the holder's lease ends), since the message must wait rather than be
// dropped. A zero Processor is not usable: set Handler. It is safe for
// concurrent use; each call has its own state.
type Processor struct {
	// Handler is the handler chain.
	Handler Handler
	// MaxAttempts bounds the attempts for ordinary errors (0:
	// [DefaultMaxAttempts]).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts (0: the
	// defaults).
	MinBackoff, MaxBackoff time.Duration
}

// Process runs the handler for m until it succeeds, asks for the dead
// letter, or stop is done. The handler runs with work, which a graceful
// shutdown leaves alive so the current attempt can finish; stop ends the
// waiting between attempts. The returned error is the last handler error
// (the dead-letter reason for [OutcomeDeadLetter]).
func (p *Processor) Process(stop, work context.Context, m *Message) (Outcome, error) {
	maxAttempts := p.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	var b backoff.BackOff // made on the first failure only
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for attempt := 1; ; attempt++ {
		m.Attempt = attempt
		err := p.handle(work, m)
		if err == nil {
			return OutcomeAck, nil
		}
		if work.Err() != nil {
			return OutcomeAbandon, err
		}
		if ShouldDeadLetter(err, attempt, maxAttempts) {
			return OutcomeDeadLetter, err
		}
		if b == nil {
			b = p.Backoff()
		}
		wait := b.NextBackOff()
		var inFlight *InFlightError
		if errors.As(err, &inFlight) && !inFlight.Until.IsZero() {
			if d := time.Until(inFlight.Until); d > 0 && d < wait {
				wait = d
			}
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
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
