package consumer

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/forge"
)

// MissingIDPolicy says what a loop does with a message that carries no ID.
type MissingIDPolicy int

const (
	// MissingIDContent (the default) computes a content ID with
	// [ContentID], so identical messages from a producer that does not set
	// IDs are still processed once.
	MissingIDContent MissingIDPolicy = iota
	// MissingIDDeadLetter dead-letters the message with [ErrMissingID].
	MissingIDDeadLetter
)

// ContentID returns the content ID of a message without a producer ID:
// g.ID(type, key, body) — the message type as a string, the key and body
// as byte strings (nil treated as empty). See forge/SPEC.md (section "Content IDs") for the
// exact bytes hashed. Two deliveries with the same type, key and body get
// the same ID; so do two genuinely different messages that happen to be
// byte-identical, which is why producers should set IDs.
func ContentID(g *forge.Generator, typ string, key, body []byte) (uuid.UUID, error) {
	if key == nil {
		key = []byte{}
	}
	if body == nil {
		body = []byte{}
	}
	id, err := g.ID(typ, key, body)
	if err != nil {
		return uuid.Nil, fmt.Errorf("consumer: content ID: %w", err)
	}
	return id, nil
}

// Identity is the raw ID material a transport loop read from a delivery,
// as text; [Identify] parses it.
type Identity struct {
	// MessageID is the message's own ID; "" when the producer sent none.
	MessageID string
	// CorrelationID is the ID of the conversation the message belongs to;
	// "" when the producer sent none (Identify then uses the message ID).
	CorrelationID string
	// CausationID is the ID of the message that caused this one; "" for
	// none.
	CausationID string
}

// Identify fills m.ID, m.CorrelationID and m.CausationID from raw. An empty
// message ID gets a content ID (policy [MissingIDContent]) or an error
// wrapping [ErrMissingID]; an ID that is present but not a UUID (or is the
// nil UUID) is an error wrapping [ErrMalformedID]. Its errors are
// [Permanent]: the message belongs in the dead letter. A missing correlation
// ID defaults to the message ID.
func Identify(m *Message, raw Identity, g *forge.Generator, policy MissingIDPolicy) error {
	m.ContentID = false
	switch {
	case raw.MessageID == "" && policy == MissingIDDeadLetter:
		return Permanent(ErrMissingID)
	case raw.MessageID == "":
		id, err := ContentID(g, m.Type, m.Key, m.Body)
		if err != nil {
			return Permanent(err)
		}
		m.ID, m.ContentID = id, true
	default:
		id, err := parseID("message ID", raw.MessageID)
		if err != nil {
			return err
		}
		m.ID = id
	}
	m.CorrelationID = m.ID
	if raw.CorrelationID != "" {
		id, err := parseID("correlation ID", raw.CorrelationID)
		if err != nil {
			return err
		}
		m.CorrelationID = id
	}
	m.CausationID = uuid.Nil
	if raw.CausationID != "" {
		id, err := parseID("causation ID", raw.CausationID)
		if err != nil {
			return err
		}
		m.CausationID = id
	}
	return nil
}

func parseID(what, s string) (uuid.UUID, error) {
	const maxShown = 64
	shown := s
	if len(shown) > maxShown {
		shown = shown[:maxShown] + "…"
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, Permanent(fmt.Errorf("%w: %s %q is not a UUID", ErrMalformedID, what, shown))
	}
	if id == uuid.Nil {
		return uuid.Nil, Permanent(fmt.Errorf("%w: %s is the nil UUID", ErrMalformedID, what))
	}
	return id, nil
}

// DefaultContentNamespace is the forge namespace the transport loops use for
// content IDs unless given a generator. Every consumer of one scope must use
// the same generator, or the same message gets different content IDs.
const DefaultContentNamespace = "content.uuidforge"
