// Package publisher stamps outgoing messages with deterministic message,
// correlation and causation IDs, independently of the transport that sends
// them. The transports live in subpackages so that importing this package
// never compiles a broker client: [github.com/uuidforge/uuidforge/publisher/rabbitpub]
// and [github.com/uuidforge/uuidforge/publisher/kafkapub].
//
// A message's ID is computed by forge from what the message is — its type
// and business key, or its type and body — so a retry, a re-run of a job or
// a replay of history produces the same ID again and consumers can
// recognise it. When the context carries the lineage of the message being
// handled ([lineage.NewContext], put there by the consumer), the new
// message's ID is derived from the parent's ID as well, its causation ID is
// the parent's ID and its correlation ID the parent's correlation ID. The
// exact derivation, byte for byte, is in forge/SPEC.md (section "Message IDs").
//
//	gen := forge.MustNew("orders.example.com")
//	msg := publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: body}
//	l, err := publisher.IDs(ctx, gen, &msg)
//	// l.MessageID = gen.ID("order.created", "o-1001"); l.CorrelationID = l.MessageID
//
// Bad input (a missing type, an invalid explicit ID, a reserved or malformed
// header, a body over the transport's maximum) is rejected before anything is
// sent, with an error wrapping [ErrInvalid].
package publisher
