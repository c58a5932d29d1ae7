package retry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/publisher"
)

// ErrBackOffStop: the back-off policy returned backoff.Stop.
var ErrBackOffStop = errors.New("back-off policy gave up")

// Do calls op until it returns nil, or an error for which permanent reports
// true, or ctx ends while waiting for the next attempt. onRetry (may be nil)
// is called before each wait. A failure is returned as a
// [*publisher.PublishError] for message id with the number of attempts; when
// ctx ended it wraps both ctx's error and the last failure that was not the
// context ending (a cut-off attempt says less about why than the one before).
func Do(ctx context.Context, transport string, id uuid.UUID, newBackOff func() backoff.BackOff, permanent func(error) bool, onRetry func(), op func() error) error {
	var bo backoff.BackOff
	var cause error
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if permanent(err) {
			return &publisher.PublishError{Transport: transport, MessageID: id, Attempts: attempt, Err: err}
		}
		if cause == nil || ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
			cause = err
		}
		if bo == nil {
			bo = newBackOff()
		}
		if onRetry != nil {
			onRetry()
		}
		if werr := Wait(ctx, bo); werr != nil {
			return &publisher.PublishError{Transport: transport, MessageID: id, Attempts: attempt, Err: JoinCtx(transport, werr, cause)}
		}
	}
}

// JoinCtx returns an error matching both the context's error and the last
// failure, for a [*publisher.PublishError] of transport: its text is
// "<ctxErr> (last failure: <last>)", where last's text does not repeat the
// "<transport>: " prefix the PublishError already starts with.
func JoinCtx(transport string, ctxErr, last error) error {
	if errors.Is(last, ctxErr) {
		return last
	}
	return &ctxJoined{ctxErr: ctxErr, last: last, text: fmt.Sprintf("%v (last failure: %s)", ctxErr,
		strings.TrimPrefix(fmt.Sprint(last), transport+": "))}
}

// ctxJoined is the error of [JoinCtx].
type ctxJoined struct {
	ctxErr, last error
	text         string
}

func (e *ctxJoined) Error() string   { return e.text }
func (e *ctxJoined) Unwrap() []error { return []error{e.ctxErr, e.last} }

// Wait sleeps for the next back-off interval, or returns the context's error
// (or ErrBackOffStop).
func Wait(ctx context.Context, bo backoff.BackOff) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := bo.NextBackOff()
	if d == backoff.Stop {
		return ErrBackOffStop
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
