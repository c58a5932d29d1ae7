package rabbitpub_test

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// TestUnroutableErrorNamesExchangeAndKey: the error of a message no queue
// took starts with the package and names where it was sent.
func TestUnroutableErrorNamesExchangeAndKey(t *testing.T) {
	url := testenv.AMQPURL(t)
	ex := testenv.Name(t, "ex")
	_, ch := declareQueue(t, url)
	if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	for name, tc := range map[string]struct {
		opt      publisher.Option
		exchange string
	}{
		"named exchange":   {rabbitpub.WithExchange(ex), fmt.Sprintf("exchange %q", ex)},
		"default exchange": {rabbitpub.WithRoutingKey(func(*publisher.Message) string { return "no-such-queue" }), "default exchange"},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPublisher(t, url, tc.opt)
			key := "order.created"
			if name == "default exchange" {
				key = "no-such-queue"
			}
			for _, err := range []error{
				p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{1}}),
				p.PublishBatch(ctx, publisher.Message{Type: "order.created", Key: []any{2}}),
			} {
				s := errString(err)
				if !errors.Is(err, publisher.ErrUnroutable) || !strings.HasPrefix(s, "rabbitpub: ") ||
					!strings.Contains(s, tc.exchange) || !strings.Contains(s, fmt.Sprintf("routing key %q", key)) {
					t.Errorf("error %q, want ErrUnroutable starting with rabbitpub: and naming %s and routing key %q", s, tc.exchange, key)
				}
			}
		})
	}
}

// withCredentials returns url with another user, password and virtual host.
func withCredentials(t *testing.T, url, user, pass, vhost string) string {
	t.Helper()
	uri, err := amqp.ParseURI(url)
	if err != nil {
		t.Fatal(err)
	}
	uri.Username, uri.Password, uri.Vhost = user, pass, vhost
	return uri.String()
}

// TestRefusalsArePermanent: wrong credentials, an unknown virtual host and
// a user without access to the virtual host are returned at once, as
// rabbitmq.ErrRefused, not retried until the deadline.
func TestRefusalsArePermanent(t *testing.T) {
	url := testenv.AMQPURL(t)
	noAccess := testenv.NewRabbitUser(t, url).URL
	uri, _ := amqp.ParseURI(noAccess)
	if out, err := exec.Command(testenv.Tool(t, "rabbitmqctl"), "clear_permissions", "-p", uri.Vhost, uri.Username).CombinedOutput(); err != nil {
		t.Fatalf("clear_permissions: %v: %s", err, out)
	}
	for name, u := range map[string]string{
		"wrong password": withCredentials(t, url, "guest", "not-the-password", "/"),
		"unknown vhost":  withCredentials(t, url, "guest", "guest", testenv.Name(t, "novhost")),
		"no access":      noAccess,
	} {
		t.Run(name, func(t *testing.T) {
			p := newPublisher(t, u)
			ctx := testenv.Context(t, 20*time.Second)
			if err := p.Ping(ctx); !errors.Is(err, rabbitmq.ErrRefused) || ctx.Err() != nil {
				t.Fatalf("Ping = %v, want rabbitmq.ErrRefused before the deadline", err)
			}
			err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
			if !errors.Is(err, rabbitmq.ErrRefused) || ctx.Err() != nil {
				t.Fatalf("Publish = %v, want rabbitmq.ErrRefused before the deadline", err)
			}
			if !strings.HasPrefix(err.Error(), "rabbitpub: ") || strings.Contains(err.Error(), "not-the-password") {
				t.Errorf("error %q: want the rabbitpub prefix and no password", err)
			}
			if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"k"}}); !errors.Is(err, rabbitmq.ErrRefused) || ctx.Err() != nil {
				t.Fatalf("PublishBatch = %v, want rabbitmq.ErrRefused before the deadline", err)
			}
		})
	}
}

// TestMessageKeyHeader: the business key travels in the message-key header,
// as publisher.KeyBytes gives it; a message without a key has no such
// header.
func TestMessageKeyHeader(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	p := newPublisher(t, url, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	keys := [][]any{{"o-1001"}, {"EUR", 12345}, {[]byte{0, 1, 0xff}}, nil}
	var msgs []publisher.Message
	for _, k := range keys {
		msgs = append(msgs, publisher.Message{Type: "t", Key: k, Body: []byte("b")})
	}
	if err := p.Publish(ctx, msgs[0]); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishBatch(ctx, msgs[1:]...); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok {
			t.Fatalf("get: %v %v", ok, err)
		}
		want, _ := publisher.KeyBytes(k)
		got, has := d.Headers[lineage.HeaderMessageKey]
		switch {
		case k == nil && has:
			t.Errorf("message without a key has %s = %v", lineage.HeaderMessageKey, got)
		case k != nil && got != string(want):
			t.Errorf("key %v: header %s = %#v, want %q", k, lineage.HeaderMessageKey, got, want)
		}
	}
}

// queueDepth returns the number of ready messages in q, declared with args.
func queueDepth(t *testing.T, url, q string, args amqp.Table) int {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, args)
	if err != nil {
		t.Fatalf("inspect %s: %v", q, err)
	}
	return st.Messages
}

// deleteLater deletes the named queues and exchanges when t ends.
func deleteLater(t *testing.T, url string, queues, exchanges []string) {
	t.Cleanup(func() {
		c, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer c.Close()
		ch, err := c.Channel()
		if err != nil {
			return
		}
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, e := range exchanges {
			_ = ch.ExchangeDelete(e, false, false)
		}
	})
}

// TestTopologyDeclaredOnEveryConnect: WithTopology declares exchanges,
// queues and bindings before the first publish, and again after a
// reconnect, so a broker that lost them is set up before messages arrive.
func TestTopologyDeclaredOnEveryConnect(t *testing.T) {
	url := testenv.AMQPURL(t)
	ex, q := testenv.Name(t, "ex"), testenv.Name(t, "q")
	deleteLater(t, url, []string{q}, []string{ex})
	topo := rabbitmq.Topology{
		Exchanges: []rabbitmq.Exchange{{Name: ex, Kind: "topic"}},
		Queues:    []rabbitmq.Queue{{Name: q}},
		Bindings:  []rabbitmq.Binding{{Exchange: ex, Queue: q, Key: "order.*"}},
	}
	proxy := testenv.StartProxy(t, strings.TrimSuffix(strings.SplitN(url, "@", 2)[1], "/"))
	p := newPublisher(t, withHost(t, url, proxy.Addr()), rabbitpub.WithExchange(ex), rabbitpub.WithTopology(topo))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{1}}); err != nil {
		t.Fatalf("Publish with a topology on a fresh broker = %v", err)
	}
	if n := queueDepth(t, url, q, nil); n != 1 {
		t.Fatalf("%d messages in the declared queue, want 1", n)
	}
	// The broker loses its definitions and the connection drops.
	c, _ := amqp.Dial(url)
	ch, _ := c.Channel()
	if _, err := ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ex, false, false); err != nil {
		t.Fatal(err)
	}
	c.Close()
	proxy.SetDown(true)
	proxy.SetDown(false)
	if err := p.PublishBatch(ctx, publisher.Message{Type: "order.paid", Key: []any{1}}, publisher.Message{Type: "order.shipped", Key: []any{1}}); err != nil {
		t.Fatalf("PublishBatch after a reconnect = %v", err)
	}
	if n := queueDepth(t, url, q, nil); n != 2 {
		t.Fatalf("%d messages in the redeclared queue, want 2", n)
	}
}

// withHost returns url with its host:port replaced.
func withHost(t *testing.T, url, hostport string) string {
	t.Helper()
	uri, err := amqp.ParseURI(url)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(hostport, ":")
	uri.Host = host
	fmt.Sscan(port, &uri.Port)
	return uri.String()
}

// TestTopologyClashIsPermanent: a declaration the broker refuses (a queue
// that exists with other arguments) is a clear, permanent error from Ping
// and Publish, naming the queue.
func TestTopologyClashIsPermanent(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, _ := declareQueue(t, url) // a classic queue
	p := newPublisher(t, url, rabbitpub.WithQueue(q),
		rabbitpub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: q, Type: rabbitmq.Quorum}}}))
	ctx := testenv.Context(t, 20*time.Second)
	for name, err := range map[string]error{
		"Ping":         p.Ping(ctx),
		"Publish":      p.Publish(ctx, publisher.Message{Type: "t", Key: []any{1}}),
		"PublishBatch": p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{1}}),
	} {
		s := errString(err)
		if !errors.Is(err, rabbitmq.ErrRefused) || ctx.Err() != nil || !strings.HasPrefix(s, "rabbitpub: ") || !strings.Contains(s, q) || !strings.Contains(s, "PRECONDITION_FAILED") {
			t.Errorf("%s = %v, want a permanent rabbitpub error naming the queue and the broker's reason", name, err)
		}
	}
}

// TestQuorumQueue: publishing with confirms to a quorum queue declared
// through the topology, directly by queue name.
func TestQuorumQueue(t *testing.T) {
	url := testenv.AMQPURL(t)
	q := testenv.Name(t, "quorum")
	deleteLater(t, url, []string{q}, nil)
	p := newPublisher(t, url, rabbitpub.WithQueue(q),
		rabbitpub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: q, Type: rabbitmq.Quorum, DeliveryLimit: 3}}}))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{0}}); err != nil {
		t.Fatal(err)
	}
	var batch []publisher.Message
	for i := 1; i <= 50; i++ {
		batch = append(batch, publisher.Message{Type: "t", Key: []any{i}})
	}
	if err := p.PublishBatch(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	quorum := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	waitFor(t, "51 messages in the quorum queue", func() bool { return queueDepth(t, url, q, quorum) == 51 })
}

// TestPing: Ping connects now and reports the result; it does nothing when
// a connection is up, and fails after Close.
func TestPing(t *testing.T) {
	url := testenv.AMQPURL(t)
	p := newPublisher(t, url)
	ctx := testenv.Context(t, 20*time.Second)
	for range 2 {
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("Ping = %v", err)
		}
	}
	// A node that is down: the context bounds Ping, the error says why.
	dead := newPublisher(t, "amqp://guest:guest@127.0.0.1:1/")
	short, cancel := withTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := dead.Ping(short); err == nil || errors.Is(err, rabbitmq.ErrRefused) || !strings.HasPrefix(err.Error(), "rabbitpub: ") {
		t.Fatalf("Ping of a dead node = %v, want a rabbitpub error that is not a refusal", err)
	}
	p.Close()
	if err := p.Ping(ctx); !errors.Is(err, publisher.ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
}

// TestFailoverURLs: with several nodes, the publisher reaches the next one
// when the node it used goes away.
func TestFailoverURLs(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	broker := strings.TrimSuffix(strings.SplitN(url, "@", 2)[1], "/")
	a, b := testenv.StartProxy(t, broker), testenv.StartProxy(t, broker)
	p := newPublisher(t, withHost(t, url, a.Addr()), toQueue(q), rabbitpub.WithFailoverURLs(withHost(t, url, b.Addr())))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"via a"}}); err != nil {
		t.Fatal(err)
	}
	a.SetDown(true)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"via b"}}); err != nil {
		t.Fatalf("Publish with the first node down = %v", err)
	}
	if err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"batch via b"}}); err != nil {
		t.Fatalf("PublishBatch with the first node down = %v", err)
	}
	if n := len(drain(t, ch, q)); n != 3 {
		t.Fatalf("%d messages in the queue, want 3", n)
	}
	// A dead first node from the start.
	p2 := newPublisher(t, "amqp://guest:guest@127.0.0.1:1/", toQueue(q), rabbitpub.WithFailoverURLs(url))
	if err := p2.Publish(ctx, publisher.Message{Type: "t", Key: []any{"second node"}}); err != nil {
		t.Fatalf("Publish with a dead first URL = %v", err)
	}
}

// TestNewValidatesTheNewOptions: conflicting and malformed options are
// errors from New that name the option and never show a password.
func TestNewValidatesTheNewOptions(t *testing.T) {
	for name, opts := range map[string][]publisher.Option{
		"queue and exchange":    {rabbitpub.WithQueue("q"), rabbitpub.WithExchange("x")},
		"exchange and queue":    {rabbitpub.WithExchange("x"), rabbitpub.WithQueue("q")},
		"queue and routing key": {rabbitpub.WithQueue("q"), rabbitpub.WithRoutingKey(func(*publisher.Message) string { return "k" })},
		"empty queue":           {rabbitpub.WithQueue("")},
		"long queue":            {rabbitpub.WithQueue(strings.Repeat("q", 256))},
		"bad topology":          {rabbitpub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{}}})},
		"no failover URL":       {rabbitpub.WithFailoverURLs()},
		"bad failover URL":      {rabbitpub.WithFailoverURLs("amqp://u:" + secret + "@h:1/%zz")},
	} {
		_, err := rabbitpub.New("amqp://localhost/", gen, opts...)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "rabbitpub: ") || !strings.Contains(err.Error(), "rabbitpub.With") || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v, want a rabbitpub error naming the option, without the password", name, err)
		}
	}
}
