// Package publishertest provides a [publisher.Publisher] that records what
// it is asked to publish instead of sending it, so that the tests of a
// service's handlers need no broker.
//
// The recorder stamps every message exactly as the real publishers do
// ([publisher.Stamp], lineage from the context included), so a test can
// check the IDs a handler's messages will carry:
//
//	rec := publishertest.New(forge.MustNew("orders.example.com"))
//	svc := NewService(rec) // takes a publisher.Publisher
//	svc.PlaceOrder(ctx, "SO-1001")
//	msgs := rec.Messages() // msgs[0].Lineage.MessageID, msgs[0].Message.Type, ...
package publishertest
