package publisher_test

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// A message's IDs follow from what it is; a message published while
// handling another one is tied to it.
func ExampleIDs() {
	gen := forge.MustNew("orders.example.com")
	ctx := context.Background()

	created := publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`)}
	l1, err := publisher.IDs(ctx, gen, &created)
	if err != nil {
		panic(err)
	}
	fmt.Println("order.created     ", l1.MessageID, "correlation", l1.CorrelationID)

	// The consumer puts the incoming message's lineage into the context.
	handling := lineage.NewContext(ctx, l1)
	invoice := publisher.Message{Type: "invoice.requested", Key: []any{"o-1001", 1}}
	l2, err := publisher.IDs(handling, gen, &invoice)
	if err != nil {
		panic(err)
	}
	fmt.Println("invoice.requested ", l2.MessageID, "causation  ", l2.CausationID)
	fmt.Println("same chain:", l2.CorrelationID == l1.CorrelationID)
	// Output:
	// order.created      0e14f021-2ed0-515a-b3f6-04aa223bde29 correlation 0e14f021-2ed0-515a-b3f6-04aa223bde29
	// invoice.requested  9737df12-cb0f-5fc1-a9eb-b1aa28cc5b84 causation   0e14f021-2ed0-515a-b3f6-04aa223bde29
	// same chain: true
}

// Parts and forge.Canonical show exactly what is hashed.
func ExampleParts() {
	parent := uuid.MustParse("0e14f021-2ed0-515a-b3f6-04aa223bde29")
	name, _ := forge.Canonical(publisher.Parts(parent, "invoice.requested", []any{"o-1001", 1}, nil)...)
	fmt.Println(string(name))
	name, _ = forge.Canonical(publisher.Parts(uuid.Nil, "audit.line", nil, []byte("hello"))...)
	fmt.Println(string(name))
	// Output:
	// ["0e14f021-2ed0-515a-b3f6-04aa223bde29","invoice.requested","o-1001",1]
	// ["audit.line","aGVsbG8="]
}
