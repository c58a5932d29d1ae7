package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5672/"},
		{"amqp://user:PASS%zz@127.0.0.1:5672/", "amqp://user:xxxxx@127.0.0.1:5672/"},
		{"amqp://user:PA#SS@127.0.0.1:5672/", "amqp://user:xxxxx@127.0.0.1:5672/"},
		{"amqp://user:PA/SS@127.0.0.1:5672/vh", "amqp://user:xxxxx@127.0.0.1:5672/vh"},
		{"amqp://user:PASSWORD@127.0.0.1:5672/%zz", "amqp://user:xxxxx@127.0.0.1:5672/%zz"},
		{"amqp://guest:1234/5678@h:5672/", "amqp://guest:xxxxx@h:5672/"},
		{"amqp://guest:1234?5678@h:5672/", "amqp://guest:xxxxx@h:5672/"},
		{"amqp://u:p@h:5672/?password=SECRET&heartbeat=10", "amqp://u:xxxxx@h:5672/?heartbeat=10&password=xxxxx"},
		{"amqp://u:p@h:5672/#SECRET", "amqp://u:xxxxx@h:5672/"},
		{"not a url with SECRET@host?x=SECRET", "xxxxx@host"},
	} {
		if got := rabbitmq.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRedact: whatever the password holds, it never comes back. The host
// part is kept to characters a URL carries unescaped, so that escaping
// cannot make a copy of the password out of it.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{"s3cr3t", "a/b", "a#b", "a?b", "a%zz", "1234/5678", "p w"} {
		f.Add("amqp", s, "127.0.0.1:5672/vh")
	}
	plain := func(s string) bool {
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".:/-_", r)) {
				return false
			}
		}
		return true
	}
	f.Fuzz(func(t *testing.T, scheme, pass, rest string) {
		if len(pass) < 4 || strings.Contains(pass, "@") || !plain(scheme) || !plain(rest) ||
			strings.Contains(scheme+"user"+rest+Redacted, pass) {
			return
		}
		raw := scheme + "://user:" + pass + "@" + rest
		if got := rabbitmq.Redact(raw); strings.Contains(got, pass) {
			t.Fatalf("Redact(%q) = %q shows the password", raw, got)
		}
	})
}

// Redacted is rabbitmq.Redacted, short.
const Redacted = rabbitmq.Redacted

func TestParseURLNeverShowsThePassword(t *testing.T) {
	for _, raw := range []string{
		"amqp://user:PASSWORD@127.0.0.1:5672/%zz",
		"amqp://user:PASS#WORD@127.0.0.1:5672/",
		"amqp://user:PASS/WORD@127.0.0.1:5672/",
		"amqp://user:PASS%WORD@127.0.0.1:5672/",
		"amqps://user:PASSWORD@host:notaport/",
		"amqp://user:PASS/WORD@h:5672/",
	} {
		err := rabbitmq.ParseURL(raw)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted it", raw)
			continue
		}
		if !errors.Is(err, rabbitmq.ErrRefused) {
			t.Errorf("ParseURL(%q) = %v, want ErrRefused", raw, err)
		}
		for _, secret := range []string{"PASS", "WORD"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("ParseURL(%q) error shows the password: %v", raw, err)
			}
		}
	}
	if err := rabbitmq.ParseURL("amqp://guest:guest@localhost:5672/"); err != nil {
		t.Fatal(err)
	}
}

// ParseURL refuses what parses but never dials (a port out of range, an
// authentication mechanism the client does not know, a query parameter
// amqp091-go cannot read, which it names) and accepts what amqp091-go
// dials.
func TestParseURLRefusesWhatCannotDial(t *testing.T) {
	for name, tc := range map[string]struct {
		raw  string
		want string // in the error; "" accepts
	}{
		"port 0":            {"amqp://u:PASSWORD@127.0.0.1:0/", "port 0 out of range"},
		"port 65536":        {"amqp://u:PASSWORD@127.0.0.1:65536/", "port 65536 out of range"},
		"unknown mechanism": {"amqp://u:PASSWORD@127.0.0.1/?auth_mechanism=plain&auth_mechanism=bogus", `auth_mechanism "bogus"`},
		"bad heartbeat":     {"amqp://u:PASSWORD@127.0.0.1/?heartbeat=often", "heartbeat is not an uint16"},
		"bad channel_max":   {"amqp://u:PASSWORD@127.0.0.1/?channel_max=-1", "channel_max is not an uint16"},
		"empty mechanism":   {"amqp://u:PASSWORD@127.0.0.1/?auth_mechanism=", `auth_mechanism ""`},
		"port 1":            {"amqp://u:PASSWORD@127.0.0.1:1/", ""},
		"port 65535":        {"amqps://u:PASSWORD@127.0.0.1:65535/", ""},
		"default port":      {"amqps://u:PASSWORD@127.0.0.1/", ""},
		"known mechanisms":  {"amqp://u:PASSWORD@127.0.0.1/?auth_mechanism=PLAIN&auth_mechanism=amqplain&auth_mechanism=External", ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := rabbitmq.ParseURL(tc.raw)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ParseURL(%q) = %v, want nil", tc.raw, err)
				}
				return
			}
			if !errors.Is(err, rabbitmq.ErrRefused) || !strings.Contains(fmt.Sprint(err), tc.want) {
				t.Fatalf("ParseURL(%q) = %v, want ErrRefused saying %s", tc.raw, err, tc.want)
			}
			if msg := err.Error(); strings.Contains(msg, "PASSWORD") || !strings.HasPrefix(msg, "rabbitmq: URL ") {
				t.Errorf("error %q: want the package's prefix and no password", msg)
			}
		})
	}
}

func withUser(t *testing.T, user, pass, vhost string) string {
	t.Helper()
	u := testenv.AMQPURL(t)
	i := strings.Index(u, "://")
	rest := u[i+3:]
	host := rest[strings.LastIndex(rest, "@")+1:]
	host = host[:strings.Index(host, "/")]
	return u[:i+3] + user + ":" + pass + "@" + host + "/" + vhost
}

func TestDialRefusalsAreImmediateAndPermanent(t *testing.T) {
	good := testenv.AMQPURL(t)
	for name, url := range map[string]string{
		"wrong password": withUser(t, "guest", "not-the-password", ""),
		"unknown vhost":  withUser(t, "guest", "guest", "no-such-vhost-"+testenv.Name(t, "v")),
	} {
		t.Run(name, func(t *testing.T) {
			e, err := rabbitmq.NewEndpoints([]string{url}, amqp.Config{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, _, err = e.Dial(ctx)
			if !errors.Is(err, rabbitmq.ErrRefused) {
				t.Fatalf("Dial = %v, want ErrRefused", err)
			}
			if ctx.Err() != nil || time.Since(start) > 10*time.Second {
				t.Fatalf("a refusal took %v", time.Since(start))
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
	// The good URL still works.
	e, err := rabbitmq.NewEndpoints([]string{good}, amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := e.Dial(context.Background())
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	_ = c.Close()
}

func TestDialFailsOver(t *testing.T) {
	good := testenv.AMQPURL(t)
	dead := "amqp://guest:guest@127.0.0.1:1/"
	e, err := rabbitmq.NewEndpoints([]string{dead, good}, amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c, reached, err := e.Dial(context.Background())
	if err != nil {
		t.Fatalf("Dial = %v, want the second URL", err)
	}
	defer c.Close()
	if reached != rabbitmq.Redact(good) {
		t.Fatalf("reached %q, want %q", reached, rabbitmq.Redact(good))
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if got := fmt.Sprintf(verb, e); strings.Contains(got, "guest:guest") || strings.Contains(got, "6775657374") {
			t.Fatalf("%s of Endpoints shows a password: %s", verb, got)
		}
	}
	holder := struct{ e *rabbitmq.Endpoints }{e}
	if got := fmt.Sprintf("%+v %#v", holder, holder); strings.Contains(got, "guest:guest") {
		t.Fatalf("Endpoints nested in a struct shows a password: %s", got)
	}
	// All down: the error names each URL, redacted, and is not a refusal.
	e2, _ := rabbitmq.NewEndpoints([]string{dead, "amqp://guest:secret@127.0.0.1:2/"}, amqp.Config{})
	_, _, err = e2.Dial(context.Background())
	if err == nil || errors.Is(err, rabbitmq.ErrRefused) || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "127.0.0.1:2") {
		t.Fatalf("Dial to dead nodes = %v", err)
	}
}

func TestDialHonoursContext(t *testing.T) {
	e, _ := rabbitmq.NewEndpoints([]string{"amqp://guest:guest@127.0.0.1:5672/"}, amqp.Config{})
	e.SetDialFunc(func(string, amqp.Config) (*amqp.Connection, error) {
		time.Sleep(2 * time.Second)
		return nil, errors.New("too late")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := e.Dial(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("Dial = %v after %v", err, time.Since(start))
	}
}

// HeaderFrameSize is exact: RabbitMQ checks a frame's payload (the frame
// without its 8 bytes of framing) against frame_max, so a header frame of
// frame_max+8 bytes is accepted and one byte more makes the broker close the
// connection. (HeaderFrameSize's users keep to the spec's stricter frame_max.)
func TestHeaderFrameSizeMatchesTheBroker(t *testing.T) {
	url := testenv.AMQPURL(t)
	for _, extra := range []int{0, 8, 9} {
		conn, err := amqp.Dial(url)
		if err != nil {
			testenv.Unavailable(t, "RabbitMQ", err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		p := amqp.Publishing{MessageId: "m", Type: "t", Timestamp: time.Now(), DeliveryMode: 2,
			Headers: amqp.Table{"a": "b", "n": int64(1), "nested": amqp.Table{"x": []any{"y", true}}, "pad": ""}}
		size, err := rabbitmq.HeaderFrameSize(&p)
		if err != nil {
			t.Fatal(err)
		}
		p.Headers["pad"] = strings.Repeat("p", rabbitmq.FrameMax(conn)-size+extra)
		if got, _ := rabbitmq.HeaderFrameSize(&p); got != rabbitmq.FrameMax(conn)+extra {
			t.Fatalf("padded size %d, want %d", got, rabbitmq.FrameMax(conn)+extra)
		}
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		dc, err := ch.PublishWithDeferredConfirm("", q.Name, false, false, p)
		acked := false
		if err == nil {
			select {
			case <-dc.Done():
				acked = dc.Acked()
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("no confirm and no close")
			}
		}
		if want := extra <= 8; acked != want {
			t.Errorf("header frame of frame_max%+d bytes: acked %v, want %v", extra, acked, want)
		}
		_ = conn.Close()
	}
}

func TestTopology(t *testing.T) {
	url := testenv.AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	defer conn.Close()
	ex, q, dlq := testenv.Name(t, "ex"), testenv.Name(t, "q"), testenv.Name(t, "dlq")
	topo := rabbitmq.Topology{
		Exchanges: []rabbitmq.Exchange{{Name: ex, Kind: "topic"}},
		Queues: []rabbitmq.Queue{
			{Name: dlq},
			{Name: q, Type: rabbitmq.Quorum, DeliveryLimit: 3, DeadLetterExchange: "", DeadLetterRoutingKey: dlq},
		},
		Bindings: []rabbitmq.Binding{{Exchange: ex, Queue: q, Key: "order.*"}},
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		_, _ = ch.QueueDelete(dlq, false, false, false)
		_ = ch.ExchangeDelete(ex, false, false)
	}()
	for range 2 { // idempotent
		if err := topo.Declare(ch); err != nil {
			t.Fatal(err)
		}
	}
	// Routed through the binding, into the quorum queue.
	if err := ch.Publish(ex, "order.placed", true, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in the quorum queue, want 1", st.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Redeclaring with other arguments is a clear error.
	ch2, _ := conn.Channel()
	clash := rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: q}}}
	if err := clash.Declare(ch2); err == nil || !strings.Contains(err.Error(), q) {
		t.Fatalf("redeclaring a quorum queue as classic = %v, want an error naming the queue", err)
	}
}

func TestTopologyValidate(t *testing.T) {
	for name, topo := range map[string]rabbitmq.Topology{
		"unnamed exchange":      {Exchanges: []rabbitmq.Exchange{{}}},
		"bad kind":              {Exchanges: []rabbitmq.Exchange{{Name: "x", Kind: "direkt"}}},
		"unnamed queue":         {Queues: []rabbitmq.Queue{{}}},
		"limit on classic":      {Queues: []rabbitmq.Queue{{Name: "q", DeliveryLimit: 3}}},
		"transient quorum":      {Queues: []rabbitmq.Queue{{Name: "q", Type: rabbitmq.Quorum, Transient: true}}},
		"unknown type":          {Queues: []rabbitmq.Queue{{Name: "q", Type: "stream-ish"}}},
		"binding without queue": {Bindings: []rabbitmq.Binding{{Exchange: "x"}}},
	} {
		if err := topo.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
