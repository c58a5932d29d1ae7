package lineage

import (
	"context"

	"github.com/google/uuid"
)

// Header names shared by the publisher (which writes them) and the consumer
// (which reads them): the wire contract of forge/SPEC.md. On Kafka the first
// four are record headers and the business key is the record key; on
// RabbitMQ the message ID, correlation ID and type travel in the native
// MessageId, CorrelationId and Type properties, and the causation ID and the
// business key are headers. All five names are reserved: a message's own
// headers may not use them.
const (
	// HeaderMessageID carries the message ID on Kafka (RabbitMQ: the
	// MessageId property).
	HeaderMessageID = "message-id"
	// HeaderCorrelationID carries the correlation ID on Kafka (RabbitMQ:
	// the CorrelationId property).
	HeaderCorrelationID = "correlation-id"
	// HeaderCausationID carries the causation ID on both transports; it is
	// absent on a message without a parent.
	HeaderCausationID = "causation-id"
	// HeaderMessageType carries the message type on Kafka (RabbitMQ: the
	// Type property).
	HeaderMessageType = "message-type"
	// HeaderMessageKey carries the business key on RabbitMQ, in the form
	// publisher.KeyBytes gives it; it is absent on a message without a
	// key. Kafka does not use it: the key is the record key.
	HeaderMessageKey = "message-key"
)

// Lineage is the identity of one message and its place in a chain of messages.
type Lineage struct {
	// MessageID identifies the message itself. Deterministic: derived from
	// what the message is, so a retry or replay carries the same ID.
	MessageID uuid.UUID
	// CorrelationID is shared by every message of one chain: the ID of the
	// message that started it.
	CorrelationID uuid.UUID
	// CausationID is the ID of the message whose processing produced this
	// one; uuid.Nil for the first message of a chain.
	CausationID uuid.UUID
	// Type is the message type, e.g. "order.created".
	Type string
}

type ctxKey struct{}

// NewContext returns a copy of ctx that carries l. The consumer puts the
// incoming message's lineage here so that messages published while handling it
// derive their IDs from it.
func NewContext(ctx context.Context, l Lineage) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// FromContext returns the lineage stored in ctx by [NewContext], if any.
func FromContext(ctx context.Context) (Lineage, bool) {
	l, ok := ctx.Value(ctxKey{}).(Lineage)
	return l, ok
}
