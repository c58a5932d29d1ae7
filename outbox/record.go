package outbox

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/publisher"
)

// State is where a [Record] stands.
type State string

// The states of a record. A record is created [Pending]; the relay moves it
// to [Dispatched] once the broker confirmed it, or to [Dead] when it cannot
// be published; a redrive moves a dead record back to Pending.
const (
	// Pending: not yet confirmed by the broker; published when due (at
	// once, or after the back-off of a failed attempt).
	Pending State = "pending"
	// Dispatched: confirmed by the broker; deleted after the store's
	// retention.
	Dispatched State = "dispatched"
	// Dead: publishing failed permanently (invalid or unroutable, or too
	// many attempts); kept with its reason until redriven or deleted by hand.
	Dead State = "dead"
)

// MaxDestinationLen is the longest destination name accepted, in bytes.
const MaxDestinationLen = 255

// Record is one message stored in an outbox, with its delivery state. It
// holds the message as it will be sent — IDs already stamped, the business
// key in its wire form — so that sending it later, from any process,
// produces exactly the message a direct publish would have produced.
//
// A Record is a plain value; the relay and the store's listing methods
// return fresh copies.
type Record struct {
	// Seq orders the records of a store: a record enqueued after another
	// (in a transaction that began its insert later) has a larger Seq. A
	// redrive gives the record a new Seq at the end of the queue.
	Seq int64
	// Destination names where the record goes; the relay maps it to a
	// publisher (one per exchange or topic).
	Destination string
	// ID, CorrelationID and CausationID are the message's IDs, stamped when
	// it was enqueued ([publisher.Stamp]); CausationID is uuid.Nil for the
	// first message of a chain.
	ID, CorrelationID, CausationID uuid.UUID
	// Type is the message type.
	Type string
	// Key is the business key in its wire form ([publisher.KeyBytes]); nil
	// when the message has none. Records of one destination with the same
	// key are published in Seq order.
	Key []byte
	// RoutingKey is the RabbitMQ routing key fixed at enqueue time; empty:
	// the relay's publisher computes it (by default from Type).
	RoutingKey string
	// Headers are the message's application headers.
	Headers map[string]string
	// Body is the payload.
	Body []byte
	// CreatedAt is when the record was enqueued, by the store's clock.
	CreatedAt time.Time
	// State is the record's state.
	State State
	// Attempts counts the failed attempts to publish it.
	Attempts int
	// LastError is the reason of the last failed attempt, or of its death.
	LastError string
	// DueAt is when a pending record is next tried (zero otherwise).
	DueAt time.Time
	// DoneAt is when a record was dispatched or died (zero while pending).
	DoneAt time.Time
}

// Message returns the message that sends r again with exactly its IDs: the
// ID, correlation ID and causation ID set explicitly, the key as its wire
// form (a single []byte part, which every transport sends as is). Publish it
// with a context that carries no lineage ([Relay] makes sure of that);
// publisher.IDs then reproduces r's IDs.
func (r *Record) Message() publisher.Message {
	m := publisher.Message{
		Type:          r.Type,
		Body:          r.Body,
		ID:            r.ID,
		CorrelationID: r.CorrelationID,
		CausationID:   r.CausationID,
		RoutingKey:    r.RoutingKey,
	}
	if r.Key != nil {
		m.Key = []any{r.Key}
	}
	if len(r.Headers) > 0 {
		m.Headers = maps.Clone(r.Headers)
	}
	return m
}

// Backlog describes what an outbox holds for one destination that is not
// dispatched yet.
type Backlog struct {
	// Destination is the destination described.
	Destination string
	// Pending is the number of records not yet confirmed by the broker
	// (including those waiting after a failed attempt).
	Pending int64
	// Oldest is the enqueue time of the oldest pending record, by the
	// store's clock; zero when Pending is 0.
	Oldest time.Time
	// Age is how long ago Oldest was, by the store's clock; 0 when Pending
	// is 0.
	Age time.Duration
	// Dead is the number of dead records.
	Dead int64
}

// ErrInvalidDestination is wrapped by the errors [ValidateDestination]
// returns.
var ErrInvalidDestination = errors.New("outbox: invalid destination")

// ValidateDestination reports whether name can name a destination: 1 to
// [MaxDestinationLen] bytes of valid UTF-8 without NUL (which PostgreSQL
// text cannot hold). The error wraps [ErrInvalidDestination].
func ValidateDestination(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidDestination)
	case len(name) > MaxDestinationLen:
		return fmt.Errorf("%w: %.32q... is longer than %d bytes", ErrInvalidDestination, name, MaxDestinationLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidDestination, name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%w: %q contains NUL", ErrInvalidDestination, name)
	}
	return nil
}
