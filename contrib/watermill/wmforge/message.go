package wmforge

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// Metadata keys a Watermill message carries for UUID-Forge. They are the
// wire header names of package lineage, so a message's metadata and its
// headers on the broker use the same names.
const (
	// MetadataMessageID is the message's UUID-Forge ID. The subscribers set
	// it on every message; the publishers use it as the ID when the
	// message's Watermill UUID is not itself a UUID.
	MetadataMessageID = lineage.HeaderMessageID
	// MetadataCorrelationID and MetadataCausationID carry the lineage. The
	// subscribers set them; the publishers read them (they must be UUIDs)
	// for a message published outside a handler.
	MetadataCorrelationID = lineage.HeaderCorrelationID
	MetadataCausationID   = lineage.HeaderCausationID
	// MetadataMessageType is the message type ("order.created"). A message
	// published without it gets the topic as its type.
	MetadataMessageType = lineage.HeaderMessageType
	// MetadataMessageKey is the business key in its wire form
	// (publisher.KeyBytes): the Kafka record key, the RabbitMQ
	// "message-key" header.
	MetadataMessageKey = lineage.HeaderMessageKey
	// HeaderWatermillUUID is the broker header that carries a message's
	// Watermill UUID when it is not the canonical form of the message's ID
	// (a ULID, a short UUID, an empty UUID), so that the subscriber gives
	// the message back its exact UUID. It is not a metadata key.
	HeaderWatermillUUID = "watermill-uuid"
)

// NewMessage returns a Watermill message whose UUID is the deterministic ID
// of the business fact it describes, instead of the random UUID
// message.NewMessage is usually given: gen.ID(typ, key...), or
// gen.ID(typ, payload) when key is empty — exactly what our publishers
// derive (see [publisher.IDs]). The type and the key are set in its
// metadata ([MetadataMessageType], [MetadataMessageKey]), so publishing the
// same fact again, from a retry or a re-run job, gives the same UUID and
// consumers recognise it. Use [NewMessageContext] inside a handler.
func NewMessage(gen *forge.Generator, typ string, key []any, payload []byte) (*message.Message, error) {
	return NewMessageContext(context.Background(), gen, typ, key, payload)
}

// NewMessageContext is [NewMessage] for a message caused by another: when
// ctx carries the lineage of the message being handled (the context of a
// message from this module's subscribers, or of any context given
// lineage.NewContext), the ID is derived from the parent's ID as well —
// gen.ID(parentID, typ, key...) — and the correlation and causation IDs are
// set in the metadata. The message's context is set to ctx, so our
// publishers see the same lineage.
func NewMessageContext(ctx context.Context, gen *forge.Generator, typ string, key []any, payload []byte) (*message.Message, error) {
	if gen == nil {
		return nil, errors.New("wmforge: nil generator")
	}
	pm := publisher.Message{Type: typ, Key: key, Body: payload}
	l, err := publisher.IDs(ctx, gen, &pm)
	if err != nil {
		return nil, fmt.Errorf("wmforge: %w", err)
	}
	kb, err := publisher.KeyBytes(key)
	if err != nil {
		return nil, fmt.Errorf("wmforge: key: %w: %w", err, publisher.ErrInvalid)
	}
	msg := message.NewMessage(l.MessageID.String(), payload)
	msg.Metadata.Set(MetadataMessageType, typ)
	if kb != nil {
		msg.Metadata.Set(MetadataMessageKey, string(kb))
	}
	msg.Metadata.Set(MetadataCorrelationID, l.CorrelationID.String())
	if l.CausationID != uuid.Nil {
		msg.Metadata.Set(MetadataCausationID, l.CausationID.String())
	}
	msg.SetContext(ctx)
	return msg, nil
}

// reserved reports the metadata keys that become message fields rather than
// headers when publishing.
func reserved(k string) bool {
	switch k {
	case MetadataMessageID, MetadataCorrelationID, MetadataCausationID, MetadataMessageType, MetadataMessageKey:
		return true
	}
	return false
}

// canonicalID returns s as a UUID when s is the canonical (lower-case,
// hyphenated) form of an RFC 9562 UUID of version 1 to 8: the only form that
// can travel as the message ID and come back as the same string.
func canonicalID(s string) (uuid.UUID, bool) {
	if len(s) != 36 {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(s)
	if err != nil || id.String() != s || !valid(id) {
		return uuid.Nil, false
	}
	return id, true
}

func valid(id uuid.UUID) bool {
	v := id.Version()
	return id.Variant() == uuid.RFC4122 && v >= 1 && v <= 8
}

// metaID parses the UUID in metadata key k: uuid.Nil when absent, an error
// wrapping publisher.ErrInvalid when present but not an RFC 9562 UUID.
func metaID(msg *message.Message, typ, k string) (uuid.UUID, error) {
	s, ok := msg.Metadata[k]
	if !ok || s == "" {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(s)
	if err != nil || !valid(id) {
		return uuid.Nil, publisher.Invalid(typ, "metadata %s %.64q is not an RFC 9562 UUID", k, s)
	}
	return id, nil
}

// PublisherMessage converts a Watermill message into the message our
// publishers send to topic, and returns the context to publish it with
// (the message's own, which carries the lineage of the message being
// handled when it was set from it). The mapping, which the subscribers
// undo exactly:
//
//   - Type: metadata [MetadataMessageType], or else the topic;
//   - Key: metadata [MetadataMessageKey], as one string part;
//   - ID: the Watermill UUID when it is the canonical form of an RFC 9562
//     UUID; else metadata [MetadataMessageID] when set; else, for a
//     non-empty UUID of another form (a ULID...), gen.ID([parent,] type,
//     "watermill-uuid", uuid), so the same Watermill message always gets
//     the same ID; else (an empty UUID) the ID our publishers derive from
//     the type and key or payload. When the UUID is not the canonical form
//     of the resulting ID, header [HeaderWatermillUUID] carries it;
//   - CorrelationID: metadata [MetadataCorrelationID], or else Watermill's
//     correlation ID (middleware.CorrelationIDMetadataKey) when it is a
//     UUID; CausationID: metadata [MetadataCausationID]. A lineage in the
//     context wins over both, as for every publish;
//   - every other metadata entry is a header of the same name and value,
//     Watermill's "correlation_id" included.
//
// Bad input (a metadata ID that is not a UUID, a header our publishers
// reject) returns an error wrapping [publisher.ErrInvalid].
func PublisherMessage(gen *forge.Generator, topic string, msg *message.Message) (publisher.Message, context.Context, error) {
	pm, ctx, err := publisherMessage(gen, topic, msg)
	if err != nil {
		return pm, ctx, err
	}
	if err := publisher.Validate(&pm, 0); err != nil {
		return pm, ctx, fmt.Errorf("wmforge: %w", err)
	}
	return pm, ctx, nil
}

func publisherMessage(gen *forge.Generator, topic string, msg *message.Message) (publisher.Message, context.Context, error) {
	ctx := msg.Context()
	typ := msg.Metadata.Get(MetadataMessageType)
	if typ == "" {
		typ = topic
	}
	pm := publisher.Message{Type: typ, Body: msg.Payload}
	if k, ok := msg.Metadata[MetadataMessageKey]; ok {
		pm.Key = []any{k}
	}
	var err error
	if pm.CorrelationID, err = metaID(msg, typ, MetadataCorrelationID); err != nil {
		return pm, ctx, fmt.Errorf("wmforge: %w", err)
	}
	if pm.CorrelationID == uuid.Nil {
		if id, err := uuid.Parse(middleware.MessageCorrelationID(msg)); err == nil && valid(id) {
			pm.CorrelationID = id
		}
	}
	if pm.CausationID, err = metaID(msg, typ, MetadataCausationID); err != nil {
		return pm, ctx, fmt.Errorf("wmforge: %w", err)
	}
	for k, v := range msg.Metadata {
		if reserved(k) {
			continue
		}
		if k == HeaderWatermillUUID {
			return pm, ctx, fmt.Errorf("wmforge: %w", publisher.Invalid(typ, "metadata %q is reserved for the Watermill UUID", k))
		}
		if pm.Headers == nil {
			pm.Headers = make(map[string]string, len(msg.Metadata))
		}
		pm.Headers[k] = v
	}
	if id, ok := canonicalID(msg.UUID); ok {
		pm.ID = id
		return pm, ctx, nil
	}
	if pm.ID, err = metaID(msg, typ, MetadataMessageID); err != nil {
		return pm, ctx, fmt.Errorf("wmforge: %w", err)
	}
	if pm.ID == uuid.Nil {
		// Derive the ID now, to know whether the UUID needs the header.
		probe := pm
		if msg.UUID != "" {
			probe.Key = []any{HeaderWatermillUUID, msg.UUID}
		}
		l, err := publisher.IDs(ctx, gen, &probe)
		if err != nil {
			return pm, ctx, fmt.Errorf("wmforge: %w", err)
		}
		pm.ID = l.MessageID
	}
	if msg.UUID != pm.ID.String() {
		if pm.Headers == nil {
			pm.Headers = make(map[string]string, 1)
		}
		pm.Headers[HeaderWatermillUUID] = msg.UUID
	}
	return pm, ctx, nil
}

// WatermillMessage converts a delivery of our consumers into a Watermill
// message, undoing [PublisherMessage]: its UUID is header
// [HeaderWatermillUUID] when present, otherwise m.ID in canonical form; its
// metadata holds every other header as it was, plus [MetadataMessageID],
// [MetadataCorrelationID], [MetadataCausationID] (when set),
// [MetadataMessageType] (when set), [MetadataMessageKey] (when the message
// has a key) and, when the message has none, Watermill's correlation ID
// (middleware.CorrelationIDMetadataKey) set to m.CorrelationID, so that
// Watermill's CorrelationID middleware carries our correlation on. Its
// context is ctx.
func WatermillMessage(ctx context.Context, m *consumer.Message) *message.Message {
	id := m.ID.String()
	if u, ok := m.Headers[HeaderWatermillUUID]; ok {
		id = u
	}
	msg := message.NewMessage(id, m.Body)
	for k, v := range m.Headers {
		if k != HeaderWatermillUUID {
			msg.Metadata[k] = v
		}
	}
	msg.Metadata[MetadataMessageID] = m.ID.String()
	msg.Metadata[MetadataCorrelationID] = m.CorrelationID.String()
	if m.CausationID != uuid.Nil {
		msg.Metadata[MetadataCausationID] = m.CausationID.String()
	}
	if m.Type != "" {
		msg.Metadata[MetadataMessageType] = m.Type
	}
	if m.Key != nil {
		msg.Metadata[MetadataMessageKey] = string(m.Key)
	}
	if _, ok := msg.Metadata[middleware.CorrelationIDMetadataKey]; !ok {
		msg.Metadata[middleware.CorrelationIDMetadataKey] = m.CorrelationID.String()
	}
	msg.SetContext(ctx)
	return msg
}
