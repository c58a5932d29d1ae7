package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/uuidforge/uuidforge/internal/fanout"
)

// Result is how a delivery ended.
type Result int

const (
	// Processed: the handler succeeded and its completion was stored; the
	// message was acknowledged.
	Processed Result = iota + 1
	// Duplicate: the message was completed before; the handler did not run
	// and the message was acknowledged.
	Duplicate
	// DeadLettered: the message was stored in the dead letter with its
	// reason, then acknowledged.
	DeadLettered
	// Abandoned: the message was handed back to the broker unfinished (the
	// consumer stopped, or its dead letter could not be stored); it will be
	// delivered again.
	Abandoned
)

// String returns "processed", "duplicate", "dead-lettered" or "abandoned".
func (r Result) String() string {
	switch r {
	case Processed:
		return "processed"
	case Duplicate:
		return "duplicate"
	case DeadLettered:
		return "dead-lettered"
	case Abandoned:
		return "abandoned"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Next is what happens after an attempt that did not settle a delivery.
type Next int

const (
	// NextRetry: the handler failed; it runs again after the wait.
	NextRetry Next = iota + 1
	// NextWaitLease: another consumer holds the message's claim; the message
	// waits for the holder's lease without counting an attempt.
	NextWaitLease
	// NextWaitStore: the dedupe store failed (or our lease was lost); the
	// message waits for the store without counting an attempt.
	NextWaitStore
)

// String returns "retry", "wait for lease" or "wait for store".
func (n Next) String() string {
	switch n {
	case NextRetry:
		return "retry"
	case NextWaitLease:
		return "wait for lease"
	case NextWaitStore:
		return "wait for store"
	}
	return fmt.Sprintf("Next(%d)", int(n))
}

// Attempt describes one run of the handler chain that did not settle its
// delivery.
type Attempt struct {
	// Next says what happens now.
	Next Next
	// Err is the chain's error.
	Err error
	// Duration is how long the chain ran.
	Duration time.Duration
	// Wait is how long the message waits before the next attempt.
	Wait time.Duration
	// LeaseLost reports that the handler succeeded but its completion could
	// not be stored because the claim's lease had been taken over.
	LeaseLost bool
}

// Delivery describes how a delivery ended.
type Delivery struct {
	// Result is how it ended.
	Result Result
	// Err is the dead-letter reason, or why it was abandoned; nil otherwise.
	Err error
	// Attempts is how often the handler ran.
	Attempts int
	// Duration is the time from the start of processing to the end.
	Duration time.Duration
}

// Observer receives delivery events, for logs, metrics and tracing. Its
// methods run synchronously on the consuming goroutine: they must be quick
// and safe for concurrent use. Without an observer the loops do no observer
// work beyond the logger's.
type Observer interface {
	// DeliveryStart is called when a delivery begins processing. The
	// returned context is the one its handler runs with (a tracing observer
	// puts its span there) and the one the other methods receive.
	DeliveryStart(ctx context.Context, m *Message) context.Context
	// AttemptDone is called after each run of the chain that did not settle
	// the delivery.
	AttemptDone(ctx context.Context, m *Message, a Attempt)
	// DeliveryDone is called once per delivery, when it is settled.
	DeliveryDone(ctx context.Context, m *Message, d Delivery)
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

func (m multiObserver) DeliveryStart(ctx context.Context, msg *Message) context.Context {
	for _, o := range m {
		ctx = o.DeliveryStart(ctx, msg)
	}
	return ctx
}

func (m multiObserver) AttemptDone(ctx context.Context, msg *Message, a Attempt) {
	for _, o := range m {
		o.AttemptDone(ctx, msg, a)
	}
}

func (m multiObserver) DeliveryDone(ctx context.Context, msg *Message, d Delivery) {
	for _, o := range m {
		o.DeliveryDone(ctx, msg, d)
	}
}

// Log attribute keys used by [LogObserver] and the transport loops.
const (
	LogKeyMessageID     = "message_id"
	LogKeyCorrelationID = "correlation_id"
	LogKeyCausationID   = "causation_id"
	LogKeyMessageType   = "message_type"
	LogKeySource        = "source"
)

// LogObserver returns an Observer that logs each outcome on l so that an
// operator can tell them apart, with the message's IDs, type and source:
//
//	processed            DEBUG "message processed"
//	duplicate            DEBUG "duplicate skipped"
//	handler failed       WARN  "handler failed, retrying" (attempt, max_attempts, wait, error)
//	claim held elsewhere INFO  "message in flight elsewhere, waiting" (wait)
//	store failed         WARN  "dedupe store failed, message waits" (error)
//	lease lost           WARN  "lease lost before completion, message waits" (error)
//	dead-lettered        ERROR "message dead-lettered" (attempts, error)
//	abandoned            INFO  "message returned to the broker" (error)
//
// maxAttempts is reported next to the attempt number.
func LogObserver(l *slog.Logger, maxAttempts int) Observer {
	return &logObserver{l: l, max: maxAttempts}
}

type logObserver struct {
	l   *slog.Logger
	max int
}

func (o *logObserver) DeliveryStart(ctx context.Context, _ *Message) context.Context { return ctx }

func (o *logObserver) AttemptDone(ctx context.Context, m *Message, a Attempt) {
	level, msg := slog.LevelWarn, "handler failed, retrying"
	switch {
	case a.Next == NextWaitLease:
		level, msg = slog.LevelInfo, "message in flight elsewhere, waiting"
	case a.Next == NextWaitStore && a.LeaseLost:
		msg = "lease lost before completion, message waits"
	case a.Next == NextWaitStore:
		msg = "dedupe store failed, message waits"
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := o.attrs(m, 4)
	if a.Next == NextRetry {
		attrs = append(attrs, slog.Int("attempt", m.Attempt), slog.Int("max_attempts", o.max))
	}
	attrs = append(attrs, slog.Duration("wait", a.Wait), slog.Any("error", a.Err))
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

func (o *logObserver) DeliveryDone(ctx context.Context, m *Message, d Delivery) {
	level, msg := slog.LevelDebug, "message processed"
	switch d.Result {
	case Duplicate:
		msg = "duplicate skipped"
	case DeadLettered:
		level, msg = slog.LevelError, "message dead-lettered"
	case Abandoned:
		level, msg = slog.LevelInfo, "message returned to the broker"
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := append(o.attrs(m, 3), slog.Int("attempts", d.Attempts), slog.Duration("duration", d.Duration))
	if d.Err != nil {
		attrs = append(attrs, slog.Any("error", d.Err))
	}
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

func (o *logObserver) attrs(m *Message, extra int) []slog.Attr {
	attrs := make([]slog.Attr, 0, 5+extra)
	return append(attrs,
		slog.String(LogKeyMessageID, m.ID.String()),
		slog.String(LogKeyCorrelationID, m.CorrelationID.String()),
		slog.String(LogKeyCausationID, m.CausationID.String()),
		slog.String(LogKeyMessageType, m.Type),
		slog.String(LogKeySource, m.Source))
}
