package kafkatest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// A program starts a broker with New; a test would call
// kafkatest.Start(t) instead, which stops it when the test ends.
func Example() {
	k, err := kafkatest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kafkapub.New(k.Brokers(), "orders", forge.MustNew("orders.example.com"), kafkapub.WithAutoTopicCreation())
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	for _, number := range []string{"o-1001", "o-1002", "o-1001"} {
		if err := p.Publish(ctx, publisher.Message{Type: "order.placed", Key: []any{number}}); err != nil {
			log.Fatal(err)
		}
	}
	n, err := k.TopicSize(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "records")
	// Output: 3 records
}
