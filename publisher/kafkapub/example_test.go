package kafkapub_test

import (
	"context"
	"log"
	"time"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// Publishing needs a broker, so this example is compiled but not run.
func ExampleNew() {
	gen := forge.MustNew("orders.example.com")
	p, err := kafkapub.New([]string{"localhost:9092"}, "orders", gen)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := []publisher.Message{
		{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`)},
		{Type: "order.created", Key: []any{"o-1002"}, Body: []byte(`{"total":99}`)},
	}
	if err := p.PublishBatch(ctx, msgs...); err != nil {
		log.Fatal(err)
	}
}
