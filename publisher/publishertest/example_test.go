package publishertest_test

import (
	"context"
	"fmt"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/publishertest"
)

// placeOrder is service code: it takes any publisher.
func placeOrder(ctx context.Context, pub publisher.Publisher, orderID string) error {
	return pub.Publish(ctx, publisher.Message{Type: "order.placed", Key: []any{orderID}, Body: []byte(`{"total":1234}`)})
}

// A handler's test checks what it published, and with which IDs, without
// a broker.
func ExampleRecorder() {
	gen := forge.MustNew("orders.example.com")
	rec := publishertest.New(gen)
	_ = placeOrder(context.Background(), rec, "SO-1001")
	_ = placeOrder(context.Background(), rec, "SO-1001") // a retried request: same ID

	for _, m := range rec.Messages() {
		fmt.Println(m.Message.Type, string(m.Key), m.Lineage.MessageID)
	}
	// Output:
	// order.placed SO-1001 9be1cc25-fbe4-58aa-bdd0-9b997a56f6a2
	// order.placed SO-1001 9be1cc25-fbe4-58aa-bdd0-9b997a56f6a2
}
