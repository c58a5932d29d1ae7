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
// business key are headers.
const (
	HeaderMessageID     = "message-id"
	HeaderCorrelationID = "correlation-id"
	HeaderCausationID   = "causation-id"
	HeaderMessageType   = "message-type"
	// HeaderMessageKey carries the business key on RabbitMQ (the record
	// key on Kafka), in the form publisher.KeyBytes gives it.
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
