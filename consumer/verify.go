package consumer

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/forge"
)

// verifyIDs is the layer of [WithVerifiedIDs]: it lets through only
// messages whose ID is one gen derives from their causation ID, type and
// key (or body), exactly as the publishers derive it (forge/SPEC.md,
// "Message IDs").
func verifyIDs(gen *forge.Generator) Middleware {
	return func(next Handler) Handler {
		return &wrapped{kind: layerVerify, next: next, fn: func(ctx context.Context, m *Message) error {
			if err := VerifyID(gen, m); err != nil {
				m.state.attempt.skipped = true
				return err
			}
			return next.Handle(ctx, m)
		}}
	}
}

// VerifyID reports whether m.ID is the ID gen derives from m's causation
// ID, type and key — or its body when it has no key — as the publishers do.
// Empty key bytes are read both ways: no key (the body counts) and a key of
// one empty string or byte string.
// The key travels in its wire form (publisher.KeyBytes), which does not say
// whether a producer's key was one string, one byte string or a list of
// parts, so each reading is tried; with a keyed generator none can be
// forged without the secret. It returns nil for a match and otherwise a
// [Permanent] error wrapping [ErrForgedID]: a message with a content ID
// (the producer sent none) or published with an explicit ID does not
// match.
func VerifyID(gen *forge.Generator, m *Message) error {
	if m.ContentID {
		return Permanent(fmt.Errorf("%w: the message carries no ID", ErrForgedID))
	}
	for _, want := range candidateIDs(gen, m) {
		if want == m.ID {
			return nil
		}
	}
	return Permanent(fmt.Errorf("%w: %s is not derived from causation %s, type %q and the message's key", ErrForgedID, m.ID, m.CausationID, m.Type))
}

func candidateIDs(gen *forge.Generator, m *Message) []uuid.UUID {
	var prefix []any
	if m.CausationID != uuid.Nil {
		prefix = append(prefix, m.CausationID)
	}
	prefix = append(prefix, m.Type)
	var ids []uuid.UUID
	add := func(parts ...any) {
		if id, err := gen.ID(append(append([]any{}, prefix...), parts...)...); err == nil {
			ids = append(ids, id)
		}
	}
	body := m.Body
	if body == nil {
		body = []byte{}
	}
	if len(m.Key) == 0 {
		add(body) // the publishers hash the body when there is no key
		// ... and empty key bytes may also come from a key of one empty
		// part, which the name holds instead of the body.
		add("")
		if len(body) > 0 {
			add([]byte{})
		}
		return ids
	}
	add(string(m.Key)) // one string part
	add(m.Key)         // one []byte part
	// Several parts (or one that is neither a string nor bytes): the key is
	// the canonical JSON array of the parts, which the name continues.
	if len(m.Key) > 2 && m.Key[0] == '[' && m.Key[len(m.Key)-1] == ']' {
		head, err := forge.Canonical(prefix...)
		if err == nil {
			name := make([]byte, 0, len(head)+len(m.Key))
			name = append(name, head[:len(head)-1]...)
			name = append(name, ',')
			name = append(name, m.Key[1:]...)
			if canon, err := forge.CanonicalJSON(name); err == nil && string(canon) == string(name) {
				ids = append(ids, gen.FromName(name))
			}
		}
	}
	return ids
}
