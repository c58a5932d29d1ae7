package consumer_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
)

// A handler behind the dedupe middleware runs once per message ID, however
// often the message is delivered; a failed attempt releases the claim so the
// redelivery is processed.
func ExampleDedupe() {
	store, err := dedupe.NewMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()
	calls := 0
	h := consumer.Chain(consumer.Lineage(), consumer.Dedupe(store, "billing"), consumer.Recover())(
		consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			calls++
			if calls == 1 {
				return errors.New("database busy") // transient: released, not acked
			}
			return nil
		}))

	m := &consumer.Message{ID: uuid.MustParse("5f1c3b0e-8a51-5d1e-9a47-0c1f8e2b7d6a"), Type: "order.created"}
	for delivery := 1; delivery <= 4; delivery++ {
		err := h.Handle(context.Background(), m)
		fmt.Printf("delivery %d: ack=%v\n", delivery, err == nil)
	}
	fmt.Println("handler calls:", calls)
	// Output:
	// delivery 1: ack=false
	// delivery 2: ack=true
	// delivery 3: ack=true
	// delivery 4: ack=true
	// handler calls: 2
}

// Messages without a producer ID get a content ID over (type, key, body).
func ExampleContentID() {
	g := forge.MustNew(consumer.DefaultContentNamespace)
	a, _ := consumer.ContentID(g, "", []byte("k1"), []byte("hello"))
	b, _ := consumer.ContentID(g, "", []byte("k1"), []byte("hello"))
	c, _ := consumer.ContentID(g, "", []byte("k1"), []byte("hello!"))
	fmt.Println(a == b, a == c)
	// Output: true false
}

// Permanent errors skip retries and go to the dead letter.
func ExamplePermanent() {
	err := fmt.Errorf("handle: %w", consumer.Permanent(errors.New("unknown product")))
	fmt.Println(consumer.IsPermanent(err), consumer.ShouldDeadLetter(err, 1, 5))
	// Output: true true
}
