package rabbitpub_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

var gen = forge.MustNew("orders.example.com")

// declareQueue declares a fresh queue on its own connection and returns its
// name and that connection's channel for inspection.
func declareQueue(t *testing.T, url string) (string, *amqp.Channel) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "q")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c2, err := amqp.Dial(url); err == nil {
			if ch2, err := c2.Channel(); err == nil {
				ch2.QueueDelete(q, false, false, false)
			}
			c2.Close()
		}
	})
	return q, ch
}

func toQueue(q string) publisher.Option { return rabbitpub.WithQueue(q) }

func newPublisher(t *testing.T, url string, opts ...publisher.Option) *rabbitpub.Publisher {
	t.Helper()
	p, err := rabbitpub.New(url, gen, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// drain reads every message currently in q and returns their message IDs.
func drain(t *testing.T, ch *amqp.Channel, q string) []string {
	t.Helper()
	var ids []string
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if !ok {
			return ids
		}
		ids = append(ids, d.MessageId)
	}
}

func TestPropertiesReadByIndependentClient(t *testing.T) {
	url := testenv.AMQPURL(t)
	py := testenv.Python(t)
	q, _ := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)

	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.created"}
	msg := publisher.Message{Type: "invoice.requested", Key: []any{"o-1001"}, Body: []byte(`{"total":12}`),
		Headers: map[string]string{"tenant": "acme"}}
	if err := p.Publish(lineage.NewContext(ctx, parent), msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
	root := publisher.Message{Type: "order.created", Key: []any{"o-1002"}, Body: []byte("b")}
	if err := p.Publish(ctx, root); err != nil {
		t.Fatalf("publish root: %v", err)
	}

	script := `
import json, sys, pika
params = pika.URLParameters(sys.argv[1])
conn = pika.BlockingConnection(params)
ch = conn.channel()
out = []
while True:
    m, props, body = ch.basic_get(sys.argv[2], auto_ack=True)
    if m is None:
        break
    out.append({"message_id": props.message_id, "correlation_id": props.correlation_id, "type": props.type,
                "delivery_mode": props.delivery_mode, "headers": props.headers or {}, "body": body.decode()})
conn.close()
print(json.dumps(out))
`
	cmd := exec.CommandContext(ctx, py, "-c", script, url, q)
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("pika: %v", err)
	}
	var got []struct {
		MessageID     string            `json:"message_id"`
		CorrelationID string            `json:"correlation_id"`
		Type          string            `json:"type"`
		DeliveryMode  int               `json:"delivery_mode"`
		Headers       map[string]string `json:"headers"`
		Body          string            `json:"body"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("pika output %q: %v", raw, err)
	}
	if len(got) != 2 {
		t.Fatalf("pika read %d messages, want 2: %s", len(got), raw)
	}
	wantID := gen.MustID(parent.MessageID, "invoice.requested", "o-1001").String()
	d := got[0]
	if d.MessageID != wantID || d.CorrelationID != parent.CorrelationID.String() || d.Type != "invoice.requested" ||
		d.DeliveryMode != 2 || d.Headers[lineage.HeaderCausationID] != parent.MessageID.String() ||
		d.Headers["tenant"] != "acme" || d.Body != `{"total":12}` {
		t.Errorf("derived message as read by pika: %+v (want id %s)", d, wantID)
	}
	rootID := gen.MustID("order.created", "o-1002").String()
	d = got[1]
	if d.MessageID != rootID || d.CorrelationID != rootID || d.Type != "order.created" {
		t.Errorf("root message as read by pika: %+v (want id %s)", d, rootID)
	}
	if _, ok := d.Headers[lineage.HeaderCausationID]; ok {
		t.Errorf("root message has a causation header: %+v", d.Headers)
	}
}

func TestSameIncomingMessageGivesSameIDs(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.created"}
	out := []publisher.Message{
		{Type: "invoice.requested", Key: []any{"o-7"}},
		{Type: "stock.reserved", Body: []byte("sku-1 x2")},
	}
	// The same incoming message handled twice (a redelivery).
	for range 2 {
		hctx := lineage.NewContext(ctx, parent)
		if err := p.PublishBatch(hctx, out...); err != nil {
			t.Fatal(err)
		}
	}
	ids := drain(t, ch, q)
	if len(ids) != 4 {
		t.Fatalf("got %d messages, want 4", len(ids))
	}
	if ids[0] != ids[2] || ids[1] != ids[3] || ids[0] == ids[1] {
		t.Fatalf("IDs of the two runs: %v", ids)
	}
}

func TestUnroutable(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	missing := testenv.Name(t, "nowhere")
	p := newPublisher(t, url, rabbitpub.WithRoutingKey(func(m *publisher.Message) string {
		if m.Type == "lost" {
			return missing
		}
		return q
	}))
	ctx := testenv.Context(t, 30*time.Second)
	err := p.Publish(ctx, publisher.Message{Type: "lost", Key: []any{1}})
	if !errors.Is(err, publisher.ErrUnroutable) {
		t.Fatalf("Publish = %v, want ErrUnroutable", err)
	}
	var pe *publisher.PublishError
	if !errors.As(err, &pe) || pe.Attempts != 1 {
		t.Errorf("err = %#v, want a PublishError after 1 attempt", err)
	}
	// In a batch, only the unroutable ones fail, and acks of the routable
	// ones are not mistaken for returns.
	var batch []publisher.Message
	for i := range 50 {
		typ := "kept"
		if i%5 == 0 {
			typ = "lost"
		}
		batch = append(batch, publisher.Message{Type: typ, Key: []any{i}})
	}
	err = p.PublishBatch(ctx, batch...)
	if !errors.Is(err, publisher.ErrUnroutable) {
		t.Fatalf("PublishBatch = %v, want ErrUnroutable", err)
	}
	if n := strings.Count(err.Error(), "rabbitpub: message "); n != 10 || strings.Count(err.Error(), "message unroutable") != 10 {
		t.Errorf("%d unroutable errors, want 10: %v", n, err)
	}
	if ids := drain(t, ch, q); len(ids) != 40 {
		t.Errorf("%d messages routed, want 40", len(ids))
	}
	// Not mandatory: dropped silently, confirmed.
	p2 := newPublisher(t, url, rabbitpub.WithMandatory(false), rabbitpub.WithRoutingKey(func(*publisher.Message) string { return missing }))
	if err := p2.Publish(ctx, publisher.Message{Type: "lost", Key: []any{1}}); err != nil {
		t.Errorf("non-mandatory publish: %v", err)
	}
}

func TestBadInputSendsNothing(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q), publisher.WithMaxBodySize(100))
	ctx := testenv.Context(t, 30*time.Second)
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		msg  publisher.Message
	}{
		{"missing type", publisher.Message{Key: []any{"k"}}},
		{"type over shortstr", publisher.Message{Type: long, Key: []any{"k"}}},
		{"header name over shortstr", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{long: "v"}}},
		{"empty header name", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"": "v"}}},
		{"header not utf8", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"h": "\xff"}}},
		{"body over max", publisher.Message{Type: "t", Key: []any{"k"}, Body: make([]byte, 101)}},
		{"invalid explicit id", publisher.Message{Type: "t", ID: uuid.Max}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Publish(ctx, tt.msg); !errors.Is(err, publisher.ErrInvalid) {
				t.Errorf("Publish = %v, want ErrInvalid", err)
			}
			good := publisher.Message{Type: "ok", Key: []any{"k"}}
			if err := p.PublishBatch(ctx, good, tt.msg); !errors.Is(err, publisher.ErrInvalid) {
				t.Errorf("PublishBatch = %v, want ErrInvalid", err)
			}
		})
	}
	if ids := drain(t, ch, q); len(ids) != 0 {
		t.Errorf("%d messages were sent despite bad input", len(ids))
	}
}

func TestDeadBrokerRespectsDeadline(t *testing.T) {
	// A closed port: every dial fails, retries continue until the deadline.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()
	// A broker that accepts connections and never answers.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for name, addr := range map[string]string{"closed port": closedAddr, "silent broker": hang.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			p, err := rabbitpub.New("amqp://guest:guest@"+addr+"/", gen)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Publish = %v, want a deadline error", err)
			}
			var pe *publisher.PublishError
			if name == "closed port" && (!errors.As(err, &pe) || pe.Attempts < 2) {
				t.Errorf("Publish = %v, want several attempts before the deadline", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("Publish returned after %v, past its deadline", el)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel2()
			if err := p.PublishBatch(ctx2, publisher.Message{Type: "t", Key: []any{"a"}}, publisher.Message{Type: "t", Key: []any{"b"}}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("PublishBatch = %v, want a deadline error", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestCloseWaitsAndRejects(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p, err := rabbitpub.New(url, gen, toQueue(q))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch []publisher.Message
			for i := range 200 {
				batch = append(batch, publisher.Message{Type: "t", Key: []any{g, i}})
			}
			errs <- p.PublishBatch(ctx, batch...)
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	published := 0
	for err := range errs {
		switch {
		case err == nil:
			published += 200
		case !errors.Is(err, publisher.ErrClosed):
			t.Errorf("PublishBatch = %v", err)
		}
	}
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"late"}}); !errors.Is(err, publisher.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	// Every batch that returned nil is in the queue: Close did not cut
	// confirms short.
	if got := len(drain(t, ch, q)); got != published {
		t.Errorf("%d messages in the queue, %d confirmed", got, published)
	}
}

func TestOptionsValidated(t *testing.T) {
	for name, opt := range map[string]publisher.Option{
		"pool":     rabbitpub.WithPoolSize(0),
		"body":     publisher.WithMaxBodySize(0),
		"timeout":  rabbitpub.WithConfirmTimeout(0),
		"routing":  rabbitpub.WithRoutingKey(nil),
		"backoff":  publisher.WithBackoff(0, time.Second),
		"exchange": rabbitpub.WithExchange(strings.Repeat("e", 256)),
		"recovery": rabbitpub.WithAMQPConfig(amqp.Config{Recovery: &amqp.Recovery{}}),
	} {
		if _, err := rabbitpub.New("amqp://localhost/", gen, opt); err == nil {
			t.Errorf("%s: invalid option accepted", name)
		}
	}
	if _, err := rabbitpub.New("http://x", gen); err == nil {
		t.Error("bad URL accepted")
	}
	if _, err := rabbitpub.New("amqp://localhost/", nil); err == nil {
		t.Error("nil generator accepted")
	}
}

func TestMissingExchangeFailsFast(t *testing.T) {
	url := testenv.AMQPURL(t)
	p := newPublisher(t, url, rabbitpub.WithExchange(testenv.Name(t, "no_such_exchange")))
	ctx := testenv.Context(t, 20*time.Second)
	start := time.Now()
	err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Fatalf("Publish = %v, want the broker's NOT_FOUND", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Publish retried a permanent error until the deadline (%v)", time.Since(start))
	}
	// The publisher recovers: the next publish on a fresh channel gets the
	// same clear error rather than a stale closed channel.
	if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"a"}}); !errors.As(err, &ae) {
		t.Fatalf("PublishBatch = %v", err)
	}
}

type contextT = context.Context

var (
	withTimeout = context.WithTimeout
	errDeadline = context.DeadlineExceeded
)
