package publisher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
)

// Publisher publishes messages stamped with their deterministic IDs. It is
// implemented by the RabbitMQ and Kafka publishers (packages rabbitpub and
// kafkapub), by the transactional outbox (package outbox/pgoutbox) and by the
// recording fake in package publishertest, so a service can take "a
// publisher" and its tests need no broker. Implementations are safe for
// concurrent use.
type Publisher interface {
	// Publish stamps msg (see [IDs]) and returns once it is stored: confirmed
	// by the broker, or written to the outbox in the caller's transaction.
	Publish(ctx context.Context, msg Message) error
	// PublishBatch publishes msgs like Publish, as one batch where the
	// transport allows it. If any message is invalid, nothing is sent.
	PublishBatch(ctx context.Context, msgs ...Message) error
}

// Sentinel errors callers branch on. Errors returned by this package and its
// transports wrap them, so test with [errors.Is].
var (
	// ErrInvalid marks bad input: a message rejected before anything was sent.
	ErrInvalid = errors.New("publisher: invalid message")
	// ErrUnroutable is returned when the broker accepted a mandatory message
	// but could not route it to any queue.
	ErrUnroutable = errors.New("publisher: message unroutable")
	// ErrClosed is returned by a publisher used after Close.
	ErrClosed = errors.New("publisher: closed")
)

// Message is an outgoing message, described independently of the transport.
//
// Its identity (see [IDs]) is derived from Type and Key, or from Type and
// Body when Key is empty, so the same business fact always gets the same ID.
// A Message is a plain value: publishers read it during the call and neither
// modify it nor keep it, so it may be reused or shared between goroutines
// as long as nobody mutates it meanwhile.
type Message struct {
	// Type names what happened or is requested, e.g. "order.created".
	// Required; valid UTF-8; must not itself be a UUID.
	Type string
	// Key is the business key: the parts that identify the entity or fact
	// (e.g. an order number, or a customer ID and a date). Each part must be
	// encodable by forge (strings, booleans, integers up to 2^53−1, floats,
	// uuid.UUID, time.Time, []byte, JSON-encodable values). Optional.
	Key []any
	// Body is the payload, sent as is.
	Body []byte
	// Headers are extra application headers. Names must be non-empty and
	// must not be one of the reserved Header* names; names and values must
	// be valid UTF-8.
	Headers map[string]string
	// ID, when not uuid.Nil, is used as the message ID instead of a derived
	// one. It must be an RFC 9562 UUID (variant 10, version 1–8).
	ID uuid.UUID
	// CorrelationID, when not uuid.Nil, is used as the correlation ID of a
	// message that starts a chain. Ignored when ctx carries a lineage, whose
	// correlation ID always wins. Validated like ID.
	CorrelationID uuid.UUID
	// CausationID, when not uuid.Nil and ctx carries no lineage, names the
	// message that caused this one, exactly as if it were published while
	// handling that message: the ID is derived from it and it becomes the
	// causation ID (with CorrelationID, or else CausationID, as the
	// correlation ID). It lets code outside a handler — an outbox relay
	// re-sending a stored message — reproduce a lineage. Validated like ID.
	CausationID uuid.UUID
	// RoutingKey, when not empty, is the RabbitMQ routing key of this
	// message, overriding the publisher's routing-key function. Kafka
	// publishers reject it (their topic is fixed and the record key is Key).
	RoutingKey string
}

// MaxHeaderNameLen is the longest header name accepted: AMQP's limit on
// table keys, applied on every transport so a message can move between
// them.
const MaxHeaderNameLen = 255

// KeyBytes returns the wire form of a business key: nil for no key; a
// single string part as its UTF-8 bytes; a single []byte part as is;
// otherwise the canonical JSON array of the parts (as forge hashes them),
// e.g. ["EUR",12345]. It is the Kafka record key (so one entity's messages
// stay in one partition, in order) and the RabbitMQ message-key header.
func KeyBytes(key []any) ([]byte, error) {
	if len(key) == 0 {
		return nil, nil
	}
	if len(key) == 1 {
		switch k := key[0].(type) {
		case string:
			return []byte(k), nil
		case []byte:
			return k, nil
		}
	}
	return forge.Canonical(key...)
}

// Invalid returns an error wrapping [ErrInvalid] that names the message type
// and the reason, e.g. `publisher: message "order.created": missing type:
// invalid message` (the package's prefix once). Transports use it for their
// own limits.
func Invalid(msgType, format string, args ...any) error {
	return &invalidError{msgType: msgType, reason: fmt.Sprintf(format, args...)}
}

// invalidError is the error of [Invalid]: its text names the package once,
// where wrapping [ErrInvalid] with %w would repeat "publisher: ".
type invalidError struct{ msgType, reason string }

// Error implements error.
func (e *invalidError) Error() string {
	return "publisher: message " + strconv.Quote(e.msgType) + ": " + e.reason + ": " +
		strings.TrimPrefix(ErrInvalid.Error(), "publisher: ")
}

// Unwrap returns ErrInvalid.
func (e *invalidError) Unwrap() error { return ErrInvalid }

// Validate checks the transport-neutral rules on msg (type, explicit IDs,
// header names and values, body size against maxBody when maxBody > 0) and
// returns an error wrapping [ErrInvalid] for the first violation.
func Validate(msg *Message, maxBody int) error {
	switch {
	case msg.Type == "":
		return Invalid(msg.Type, "missing type")
	case !utf8.ValidString(msg.Type):
		return Invalid(msg.Type, "type is not valid UTF-8")
	}
	if mayBeUUID(msg.Type) {
		if _, err := uuid.Parse(msg.Type); err == nil {
			return Invalid(msg.Type, "type must not be a UUID")
		}
	}
	if msg.ID != uuid.Nil {
		if err := checkUUID(msg.ID); err != nil {
			return Invalid(msg.Type, "explicit ID %s: %v", msg.ID, err)
		}
	}
	if msg.CorrelationID != uuid.Nil {
		if err := checkUUID(msg.CorrelationID); err != nil {
			return Invalid(msg.Type, "correlation ID %s: %v", msg.CorrelationID, err)
		}
	}
	if msg.CausationID != uuid.Nil {
		if err := checkUUID(msg.CausationID); err != nil {
			return Invalid(msg.Type, "causation ID %s: %v", msg.CausationID, err)
		}
	}
	if !utf8.ValidString(msg.RoutingKey) {
		return Invalid(msg.Type, "routing key is not valid UTF-8")
	}
	if maxBody > 0 && len(msg.Body) > maxBody {
		return Invalid(msg.Type, "body of %d bytes exceeds the maximum of %d", len(msg.Body), maxBody)
	}
	for k, v := range msg.Headers {
		switch {
		case k == "":
			return Invalid(msg.Type, "empty header name")
		case reserved(k):
			return Invalid(msg.Type, "header %q is reserved for the publisher", k)
		case len(k) > MaxHeaderNameLen:
			return Invalid(msg.Type, "header name %.32q... is longer than %d bytes", k, MaxHeaderNameLen)
		case !utf8.ValidString(k):
			return Invalid(msg.Type, "header name %q is not valid UTF-8", k)
		case !utf8.ValidString(v):
			return Invalid(msg.Type, "header %q: value is not valid UTF-8", k)
		}
	}
	return nil
}

// mayBeUUID reports whether s has the length of a form uuid.Parse accepts
// (skipping its error allocation on the hot path).
func mayBeUUID(s string) bool {
	switch len(s) {
	case 32, 36, 38, 36 + 9:
		return true
	}
	return false
}

func reserved(name string) bool {
	switch name {
	case lineage.HeaderMessageID, lineage.HeaderCorrelationID, lineage.HeaderCausationID,
		lineage.HeaderMessageType, lineage.HeaderMessageKey:
		return true
	}
	return false
}

func checkUUID(u uuid.UUID) error {
	if u.Variant() != uuid.RFC4122 {
		return fmt.Errorf("variant %s, want RFC 9562", u.Variant())
	}
	if v := u.Version(); v < 1 || v > 8 {
		return fmt.Errorf("version %d, want 1-8", v)
	}
	return nil
}

// IDs validates msg (see [Validate], without a body limit) and computes its
// lineage with gen:
//
//   - message ID: msg.ID if set; otherwise, when ctx carries a parent
//     lineage ([lineage.FromContext]) — or, without one, when
//     msg.CausationID is set, which then stands for the parent —
//     gen.ID(parent.MessageID, Type, Key...)
//     (or gen.ID(parent.MessageID, Type, Body) when Key is empty); otherwise
//     gen.ID(Type, Key...) (or gen.ID(Type, Body));
//   - correlation ID: the parent's correlation ID (or, when that is nil, the
//     parent's message ID); otherwise msg.CorrelationID if set; otherwise the
//     message ID itself;
//   - causation ID: the parent's message ID; uuid.Nil without a parent.
//
// The exact bytes hashed are specified in forge/SPEC.md (section "Message IDs"). A message with
// no parent, no Key, no explicit ID and an empty Body would get the same ID
// as every other such message of its type, so it is rejected.
func IDs(ctx context.Context, gen *forge.Generator, msg *Message) (lineage.Lineage, error) {
	return Stamp(ctx, gen, msg, 0)
}

// Stamp is [IDs] with a body limit: it also rejects a body longer than
// maxBody bytes when maxBody > 0. Transports call it once per message.
func Stamp(ctx context.Context, gen *forge.Generator, msg *Message, maxBody int) (lineage.Lineage, error) {
	if err := Validate(msg, maxBody); err != nil {
		return lineage.Lineage{}, err
	}
	return ids(ctx, gen, msg)
}

func ids(ctx context.Context, gen *forge.Generator, msg *Message) (lineage.Lineage, error) {
	l := lineage.Lineage{Type: msg.Type}
	parent, hasParent := lineage.FromContext(ctx)
	if hasParent && parent.MessageID == uuid.Nil {
		hasParent = false
	}
	if !hasParent && msg.CausationID != uuid.Nil {
		parent = lineage.Lineage{MessageID: msg.CausationID, CorrelationID: msg.CorrelationID}
		hasParent = true
	}
	l.MessageID = msg.ID
	if l.MessageID == uuid.Nil {
		if !hasParent && len(msg.Key) == 0 && len(msg.Body) == 0 {
			return l, Invalid(msg.Type, "no key, no body and no explicit ID: nothing to derive an ID from")
		}
		id, err := gen.ID(Parts(parent.MessageID, msg.Type, msg.Key, msg.Body)...)
		if err != nil {
			return l, Invalid(msg.Type, "deriving message ID: %v", err)
		}
		l.MessageID = id
	}
	switch {
	case hasParent:
		l.CausationID = parent.MessageID
		l.CorrelationID = parent.CorrelationID
		if l.CorrelationID == uuid.Nil {
			l.CorrelationID = parent.MessageID
		}
	case msg.CorrelationID != uuid.Nil:
		l.CorrelationID = msg.CorrelationID
	default:
		l.CorrelationID = l.MessageID
	}
	return l, nil
}

// Parts returns the forge parts from which a message ID is derived: an
// optional parent message ID (omitted when uuid.Nil), the type, then either
// each key part or, when key is empty, the body (which forge encodes as a
// standard base64 string). It is exported so that tools and tests can
// recompute IDs exactly as the publisher does.
func Parts(parent uuid.UUID, msgType string, key []any, body []byte) []any {
	n := 1 + len(key)
	if len(key) == 0 {
		n = 2
	}
	if parent != uuid.Nil {
		n++
	}
	parts := make([]any, 0, n)
	if parent != uuid.Nil {
		parts = append(parts, parent)
	}
	parts = append(parts, msgType)
	if len(key) == 0 {
		if body == nil {
			body = []byte{} // "" rather than null: an empty body is still a body
		}
		return append(parts, body)
	}
	return append(parts, key...)
}
