package rabbitsub_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// ID squatting over a real broker: a publisher without the secret sends the
// ID of a future legitimate message with another key and body first. With
// WithVerifiedIDs the forged message goes to the dead letter, and the real
// one, published afterwards, is processed instead of being skipped as a
// duplicate.
func TestVerifiedIDsDeadLetterASquatter(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	secret, err := forge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	gen := forge.MustNew("orders.example.com", forge.WithSecret(secret))
	real := publisher.Message{Type: "order.placed", Key: []any{"SO-42"}, Body: []byte("real")}
	l, err := publisher.IDs(context.Background(), gen, &real)
	if err != nil {
		t.Fatal(err)
	}
	// The squatter learned the ID (a log line, a leaked message) and is
	// first on the queue, with its own key and body.
	b.publish(t, q, amqp.Publishing{MessageId: l.MessageID.String(), CorrelationId: l.MessageID.String(), Type: "order.placed",
		Headers: amqp.Table{"message-key": "SO-1"}, Body: []byte("squat")})
	pub, err := rabbitpub.New(b.url, gen, rabbitpub.WithQueue(q))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(context.Background(), real); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var handled []string
	h := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, string(m.Body))
		return nil
	})
	c, err := rabbitsub.New(b.url, q, h, append(fast(), consumer.WithDedupe(testsink.Memory(t), q), consumer.WithVerifiedIDs(gen),
		consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	waitFor(t, 20*time.Second, "the real message was not handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) > 0
	})
	waitFor(t, 20*time.Second, "the queue did not empty", func() bool { return b.depth(t, q) == 0 })
	r.Stop(t)
	if len(handled) != 1 || handled[0] != "real" {
		t.Fatalf("handled %q, want only the real message", handled)
	}
	dead := b.drain(t, q+consumer.DeadLetterSuffix)
	if len(dead) != 1 || string(dead[0].Body) != "squat" {
		t.Fatalf("%d dead letters, want the squatter's", len(dead))
	}
	if reason, _ := dead[0].Headers[consumer.HeaderDeadLetterReason].(string); !strings.Contains(reason, "does not match") {
		t.Fatalf("dead-letter reason %q", reason)
	}
}
