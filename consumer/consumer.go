package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
)

// Message is one delivery, independent of the broker it came from. The
// transport loops fill it in; handlers read it and must not keep it after
// Handle returns. A Message is not safe for concurrent mutation.
type Message struct {
	// ID is the message's deterministic ID: the producer's (RabbitMQ
	// MessageId, Kafka "message-id" header) or, when the producer sent none,
	// its content ID (see [ContentID] and ContentID below).
	ID uuid.UUID
	// CorrelationID is shared by every message of one chain; the message's
	// own ID when the producer sent none.
	CorrelationID uuid.UUID
	// CausationID is the ID of the message that caused this one; uuid.Nil
	// for the first message of a chain.
	CausationID uuid.UUID
	// Type is the message type ("order.created"); may be empty.
	Type string
	// Key is the business key in its wire form (publisher.KeyBytes): the
	// Kafka record key, or the RabbitMQ "message-key" header; nil when the
	// producer sent none.
	Key []byte
	// RoutingKey is the RabbitMQ routing key the message was published
	// with; empty on Kafka.
	RoutingKey string
	// Exchange is the RabbitMQ exchange the message was published to
	// (empty for the default exchange); empty on Kafka.
	Exchange string
	// Body is the payload.
	Body []byte
	// Headers holds the remaining headers as strings.
	Headers map[string]string
	// Attempt counts how often this process has run the handler for this
	// delivery, starting at 1.
	Attempt int
	// Redelivered reports that the broker says it delivered the message
	// before (RabbitMQ's redelivered flag). Always false on Kafka.
	Redelivered bool
	// ContentID reports that ID was computed from the content because the
	// producer sent no ID.
	ContentID bool
	// System is the messaging system the message came from: "rabbitmq" or
	// "kafka" (the OpenTelemetry messaging.system values).
	System string
	// Source is the queue or topic the message came from.
	Source string
	// Partition is a Kafka record's partition; 0 on RabbitMQ.
	Partition int
	// Offset is a Kafka record's offset in its partition; 0 on RabbitMQ.
	Offset int64
	// Time is the broker's or producer's timestamp, when known.
	Time time.Time

	state deliveryState // the Processor's bookkeeping
}

// deliveryState is what the Processor and the dedupe middleware note about
// one delivery.
type deliveryState struct {
	start     time.Time
	begun     bool
	runs      int  // handler runs so far
	failures  int  // failed runs counted against MaxAttempts
	duplicate bool // the delivery ended as a duplicate
	attempt   attemptState
	batch     *batchSlot // set while the message's first run is part of a batch
}

// attemptState is what the dedupe middleware reports about one run of the
// chain.
type attemptState struct {
	skipped   bool // the handler did not run (duplicate, in flight, store error)
	duplicate bool
	leaseLost bool
}

// Handler processes one message. A nil error means the message is done and
// may be acknowledged; any error means it must not be. Wrap an error with
// [Permanent] when retrying cannot help. The transport loops call a handler
// from several goroutines at once (workers, partitions), so it must be safe
// for concurrent use; every middleware here is.
type Handler interface {
	// Handle processes m; ctx ends when the attempt must stop.
	Handle(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to [Handler].
type HandlerFunc func(ctx context.Context, m *Message) error

// Handle calls f(ctx, m).
func (f HandlerFunc) Handle(ctx context.Context, m *Message) error { return f(ctx, m) }

// Middleware wraps a Handler, like net/http middleware.
type Middleware func(Handler) Handler

// Chain composes middlewares: Chain(a, b, c)(h) is a(b(c(h))), so a message
// passes a first and reaches h last. Nil middlewares are skipped.
//
// [NewHandler] builds the standard chain in the right order; the transports
// build it from their options. When composing by hand, the order is,
// outermost first:
//
//	consumer.Chain(
//		consumer.Lineage(),         // everything below publishes with the message's lineage
//		consumer.DeadLetter(sink),  // only when not using a transport loop's dead letter
//		consumer.Retry(newBackOff), // each attempt claims afresh, so an inbox never commits a failed attempt
//		consumer.Dedupe(store, "billing"),
//		consumer.Timeout(d),        // keep d below the dedupe lease
//		consumer.Recover(),         // innermost: a panic becomes an error before dedupe sees it
//	)(handler)
//
// [Check] (which the transports' New calls) rejects the orders that break
// a guarantee: Retry or a second Dedupe of the same scope inside Dedupe.
func Chain(mws ...Middleware) Middleware {
	return func(h Handler) Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			if mws[i] != nil {
				h = mws[i](h)
			}
		}
		return h
	}
}

// Sentinel errors; test with errors.Is.
var (
	// ErrInFlight: another consumer holds the message's claim. The message
	// must be neither acknowledged nor dropped; deliver it again after the
	// holder's lease ([InFlightError.Until]). The transport loops wait and
	// retry the same message.
	ErrInFlight = errors.New("consumer: message in flight elsewhere")
	// ErrStore: the dedupe store failed (outage, lost lease). The message is
	// not acknowledged and is never dead-lettered for it; it waits until
	// the store answers again.
	ErrStore = errors.New("consumer: dedupe store failed")
	// ErrMissingID: the message has no ID and the consumer is configured to
	// dead-letter such messages instead of computing a content ID.
	ErrMissingID = errors.New("consumer: message has no ID")
	// ErrMalformedID: an ID header or property is not a UUID.
	ErrMalformedID = errors.New("consumer: malformed ID")
	// ErrForgedID: the message's ID is not the one its causation ID, type
	// and key derive under the keyed generator of [WithVerifiedIDs].
	ErrForgedID = errors.New("consumer: message ID does not match its content")
)

// InFlightError is returned by the dedupe middleware when another consumer
// holds the claim. It matches [ErrInFlight] with errors.Is.
type InFlightError struct {
	// ID is the message ID.
	ID uuid.UUID
	// Until is when the holder's lease ends.
	Until time.Time
}

// Error says whose message is in flight and until when.
func (e *InFlightError) Error() string {
	return fmt.Sprintf("consumer: message %s in flight elsewhere until %s", e.ID, e.Until.Format(time.RFC3339Nano))
}

// Is reports whether target is [ErrInFlight].
func (e *InFlightError) Is(target error) bool { return target == ErrInFlight }

type storeError struct{ err error }

func (e *storeError) Error() string        { return "consumer: dedupe store: " + e.err.Error() }
func (e *storeError) Unwrap() error        { return e.err }
func (e *storeError) Is(target error) bool { return target == ErrStore }

// PermanentError marks an error that retrying cannot fix; the loops dead-
// letter the message at once. Build it with [Permanent].
type PermanentError struct {
	// Err is the error that retrying cannot fix.
	Err error
}

// Error returns the wrapped error's message.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that [Retry] and the transport loops do not retry
// it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// [Permanent], or with backoff.Permanent from github.com/cenkalti/backoff/v4.
func IsPermanent(err error) bool {
	var p *PermanentError
	var bp *backoff.PermanentError
	return errors.As(err, &p) || errors.As(err, &bp)
}

// Waiting reports whether err means "not now, deliver again later": the
// claim is held elsewhere ([ErrInFlight]) or the store failed ([ErrStore]).
// Such errors are retried without limit and never dead-lettered.
func Waiting(err error) bool {
	return errors.Is(err, ErrInFlight) || errors.Is(err, ErrStore)
}
