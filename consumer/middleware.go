package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/uuidforge/uuidforge/lineage"
)

// PanicError is what [Recover] returns for a handler that panicked.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

// Error returns the panic value and the stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("consumer: handler panicked: %v\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// layerKind names the middlewares of this package, so that [Check] can see
// the order of a chain.
type layerKind int

const (
	layerRecover layerKind = iota + 1
	layerLineage
	layerTimeout
	layerRetry
	layerDeadLetter
	layerDedupe
	layerVerify
)

// layer is implemented by the handlers the middlewares of this package
// return.
type layer interface {
	Handler
	layerInfo() (kind layerKind, next Handler)
}

// wrapped is a middleware handler of this package around next.
type wrapped struct {
	kind layerKind
	next Handler
	fn   func(ctx context.Context, m *Message) error
}

func (w *wrapped) Handle(ctx context.Context, m *Message) error { return w.fn(ctx, m) }
func (w *wrapped) layerInfo() (layerKind, Handler)              { return w.kind, w.next }

// Recover turns a panic in the next handler into a *[PanicError] carrying
// the stack. A panic is an ordinary (retryable) failure: the message is not
// acknowledged. Put it innermost so that dedupe releases the claim.
func Recover() Middleware {
	return func(next Handler) Handler {
		return &wrapped{kind: layerRecover, next: next, fn: func(ctx context.Context, m *Message) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = &PanicError{Value: v, Stack: debug.Stack()}
				}
			}()
			return next.Handle(ctx, m)
		}}
	}
}

// Lineage puts the message's lineage (ID, correlation, causation, type) into
// the context with [lineage.NewContext], so a publisher used by the handler
// derives the IDs of the messages it sends from it. The standard chain
// ([NewHandler]) and the transports always include it.
func Lineage() Middleware {
	return func(next Handler) Handler {
		return &wrapped{kind: layerLineage, next: next, fn: func(ctx context.Context, m *Message) error {
			return next.Handle(lineage.NewContext(ctx, LineageOf(m)), m)
		}}
	}
}

// LineageOf returns m's lineage.
func LineageOf(m *Message) lineage.Lineage {
	return lineage.Lineage{MessageID: m.ID, CorrelationID: m.CorrelationID, CausationID: m.CausationID, Type: m.Type}
}

// Timeout gives each handler call at most d (d <= 0: no limit). Keep d
// below the dedupe lease, or another consumer may claim the message while
// this one still works on it.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		if d <= 0 {
			return next
		}
		return &wrapped{kind: layerTimeout, next: next, fn: func(ctx context.Context, m *Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next.Handle(ctx, m)
		}}
	}
}

// Retry runs the next handler again after a failure, waiting as newBackOff's
// policy says (nil: an exponential backoff of at most 30 s in all). It does
// not retry a [Permanent] error, a [Waiting] error (the loops wait for the
// holder's lease or the store instead), or once ctx is done; it returns the
// last error. newBackOff is called once per message, since a BackOff has
// state. The transport loops retry by themselves; Retry is for chains run
// another way. Put it outside [Dedupe] ([Check] rejects it inside).
func Retry(newBackOff func() backoff.BackOff) Middleware {
	if newBackOff == nil {
		newBackOff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 10 * time.Millisecond
			b.MaxElapsedTime = 30 * time.Second
			return b
		}
	}
	return func(next Handler) Handler {
		return &wrapped{kind: layerRetry, next: next, fn: func(ctx context.Context, m *Message) error {
			var last error
			op := func() error {
				last = next.Handle(ctx, m)
				if last == nil {
					return nil
				}
				if IsPermanent(last) || Waiting(last) {
					return backoff.Permanent(last)
				}
				m.Attempt++
				return last
			}
			err := backoff.Retry(op, backoff.WithContext(newBackOff(), ctx))
			if err == nil {
				return nil
			}
			if last != nil {
				return last
			}
			return err
		}}
	}
}

// DeadLetterFunc stores a message that cannot be processed, with the reason.
type DeadLetterFunc func(ctx context.Context, m *Message, reason error) error

// ShouldDeadLetter reports whether err, returned on the attempt-th attempt
// with at most maxAttempts allowed, sends the message to the dead letter: a
// [Permanent] error at once, any other error once maxAttempts is reached —
// except [Waiting] errors (in flight, store failure), which never do.
func ShouldDeadLetter(err error, attempt, maxAttempts int) bool {
	if err == nil || Waiting(err) {
		return false
	}
	return IsPermanent(err) || (maxAttempts > 0 && attempt >= maxAttempts)
}

// DeadLetter calls dl for a message whose handler failed with a
// [Permanent] error and returns nil once dl succeeded, so the message is
// acknowledged only after it is stored elsewhere. If dl fails the original
// error is returned (joined with dl's) and the message is not acknowledged.
// The transport loops have their own dead letter (after N attempts); use
// this middleware when running the chain another way.
func DeadLetter(dl DeadLetterFunc) Middleware {
	return func(next Handler) Handler {
		return &wrapped{kind: layerDeadLetter, next: next, fn: func(ctx context.Context, m *Message) error {
			err := next.Handle(ctx, m)
			if !ShouldDeadLetter(err, m.Attempt, 0) {
				return err
			}
			if dlErr := dl(ctx, m, err); dlErr != nil {
				return errors.Join(err, fmt.Errorf("consumer: dead letter %s: %w", m.ID, dlErr))
			}
			return nil
		}}
	}
}
