package rabbitpub_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// Publishing needs a broker, so this example is compiled but not run.
func ExampleNew() {
	gen := forge.MustNew("orders.example.com")
	p, err := rabbitpub.New("amqp://guest:guest@localhost:5672/", gen,
		rabbitpub.WithExchange("orders"), // routing key: the message type
		rabbitpub.WithConfirmTimeout(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`)})
	switch {
	case errors.Is(err, publisher.ErrUnroutable):
		log.Print("no queue is bound for order.created")
	case err != nil:
		log.Fatal(err)
	}
}
