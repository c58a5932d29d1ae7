// Package lineage carries a message's identity — its message, correlation and
// causation IDs — from the consumer that receives it to the publisher that
// sends the messages it causes, through a [context.Context].
//
// It is the one place both publisher and consumer import, so neither depends
// on the other's transport code:
//
//	// in a consumer (the lineage middleware does this for you)
//	ctx = lineage.NewContext(ctx, lineage.Lineage{MessageID: id, CorrelationID: corr, Type: "order.created"})
//
//	// in the publisher
//	if parent, ok := lineage.FromContext(ctx); ok {
//		// correlation = parent.CorrelationID, causation = parent.MessageID
//	}
//
// The header names are the wire contract described in forge/SPEC.md.
package lineage
