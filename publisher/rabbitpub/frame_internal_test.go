package rabbitpub

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
)

// TestFrameCheckedOnTheConnectionUsed: when the frame size learnt earlier
// is larger than the one of the connection a message is sent on (a node
// with a smaller frame_max), the send path still refuses the message
// instead of sending it, and only that one: the others of its batch are
// published.
func TestFrameCheckedOnTheConnectionUsed(t *testing.T) {
	url := testenv.AMQPURL(t)
	c, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "q")
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	p, err := New(url, allocGen, WithQueue(q), WithAMQPConfig(amqp.Config{Heartbeat: 10 * time.Second, FrameSize: 8192}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.frameMax.Store(1 << 20) // what an earlier connection allowed
	ctx := testenv.Context(t, 20*time.Second)
	big := publisher.Message{Type: "t", Key: []any{"big"}, Headers: map[string]string{"pad": strings.Repeat("x", 10000)}}

	err = p.Publish(ctx, big)
	var pe *publisher.PublishError
	if !errors.Is(err, publisher.ErrInvalid) || !errors.As(err, &pe) || pe.Attempts != 1 || !strings.Contains(err.Error(), "8192") {
		t.Fatalf("Publish = %v, want ErrInvalid after one attempt naming the frame size", err)
	}
	p.frameMax.Store(1 << 20)
	err = p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"a"}}, big, publisher.Message{Type: "t", Key: []any{"b"}})
	if !errors.Is(err, publisher.ErrInvalid) || strings.Count(err.Error(), "rabbitpub: message") != 1 {
		t.Fatalf("PublishBatch = %v, want one ErrInvalid", err)
	}
	if n := p.retries.Load(); n != 0 {
		t.Errorf("%d messages published again", n)
	}
	st, err := ch.QueueDeclarePassive(q, false, true, false, false, nil)
	if err != nil || st.Messages != 2 {
		t.Fatalf("queue holds %d messages (%v), want the 2 others of the batch", st.Messages, err)
	}
}
