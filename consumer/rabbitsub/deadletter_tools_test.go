package rabbitsub_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// A Guard's connection reads a queue that holds messages amqp091-go cannot
// read with basic.get, as a tool reading a dead-letter queue does: each
// such message arrives without its headers, Unreadable returns them as
// received (DecodeHeaders reads them, CheckHeaders says the client cannot),
// the connection lives on, and a readable message behind them passes
// unchanged.
func TestGuardBasicGet(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	poison := poisons(t, rabbitmq.DefaultFrameMax)
	names := map[string]string{} // message ID -> poison; IDs as long as poisons assumes
	for name, headers := range poison {
		id := uuid.NewString()
		names[id] = name
		b.publish(t, q, amqp.Publishing{MessageId: id, Headers: headers, Body: []byte("poison")})
	}
	good := uuid.NewString()
	b.publish(t, q, amqp.Publishing{MessageId: good, Headers: amqp.Table{"tenant": "7"}, Body: []byte("good")})

	var g rabbitsub.Guard
	ends, err := rabbitmq.NewEndpoints([]string{b.url}, amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ends.SetDialFunc(g.Dial)
	conn, _, err := ends.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Release(conn)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for range names {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok {
			t.Fatalf("get: %v, %v (connection closed: %v)", ok, err, conn.IsClosed())
		}
		name := names[d.MessageId]
		raw, reason, ok := g.Unreadable(conn, &d)
		if !ok || d.Headers != nil || reason == "" {
			t.Fatalf("%s: unreadable %v, reason %q, %d headers left", name, ok, reason, len(d.Headers))
		}
		if _, _, again := g.Unreadable(conn, &d); again {
			t.Errorf("%s: the table was returned twice", name)
		}
		table, err := rabbitsub.DecodeHeaders(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(table) != len(poison[name]) {
			t.Errorf("%s: %d headers decoded, want %d", name, len(table), len(poison[name]))
		}
		err = rabbitsub.CheckHeaders(raw)
		if name == "header near frame_max" {
			// Readable as a table: its size is what the client refuses.
			if err != nil || !strings.Contains(reason, "frame_max") {
				t.Errorf("%s: CheckHeaders %v, reason %q", name, err, reason)
			}
			continue
		}
		if !errors.Is(err, rabbitsub.ErrUnreadableHeaders) {
			t.Errorf("%s: CheckHeaders %v, want ErrUnreadableHeaders", name, err)
		}
	}
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok || d.MessageId != good || d.Headers["tenant"] != "7" || string(d.Body) != "good" {
		t.Fatalf("readable message: %v %v %q %d headers %q", ok, err, d.MessageId, len(d.Headers), d.Body)
	}
	if _, _, ok := g.Unreadable(conn, &d); ok {
		t.Error("a readable message reported unreadable")
	}
}

// Guard.Dial's errors name the package once, never show the password, and
// keep a refusal recognisable.
func TestGuardDialErrors(t *testing.T) {
	wrongPassword, err := url.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	wrongPassword.User = url.UserPassword(wrongPassword.User.Username(), "s3cr-wrong")
	for name, tc := range map[string]struct {
		url     string
		refused bool
	}{
		"bad URL":        {"amqp://user:s3cr%t@localhost/", true},
		"closed port":    {"amqp://user:s3cret@127.0.0.1:1/", false},
		"wrong password": {wrongPassword.String(), true},
	} {
		t.Run(name, func(t *testing.T) {
			var g rabbitsub.Guard
			conn, err := g.Dial(tc.url, amqp.Config{})
			if err == nil {
				g.Release(conn)
				t.Fatal("dialled")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "rabbitsub: ") || strings.Count(msg, "rabbitsub: ") != 1 || strings.Contains(msg, "s3cr") {
				t.Errorf("error %q: want the prefix once and no password", msg)
			}
			if refused := errors.Is(rabbitmq.Classify(err), rabbitmq.ErrRefused); refused != tc.refused {
				t.Errorf("error %q: refused %v, want %v", msg, refused, tc.refused)
			}
		})
	}
}

func TestCheckAndDecodeHeaders(t *testing.T) {
	for _, tc := range []struct {
		name     string
		raw      []byte
		readable bool // by amqp091-go
		decodes  bool // by DecodeHeaders
	}{
		{"empty", []byte{0, 0, 0, 0}, true, true},
		{"one string", []byte{0, 0, 0, 7, 1, 'k', 'S', 0, 0, 0, 0}, true, true},
		{"unknown type", []byte{0, 0, 0, 3, 1, 'k', 'Z'}, false, false},
		{"truncated", []byte{0, 0, 0, 9, 1, 'k'}, false, false},
		{"trailing bytes", []byte{0, 0, 0, 0, 1}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := rabbitsub.CheckHeaders(tc.raw); (err == nil) != tc.readable || (err != nil && !errors.Is(err, rabbitsub.ErrUnreadableHeaders)) {
				t.Errorf("CheckHeaders: %v", err)
			}
			if _, err := rabbitsub.DecodeHeaders(tc.raw); (err == nil) != tc.decodes {
				t.Errorf("DecodeHeaders: %v", err)
			}
		})
	}
}

// FuzzDecodeHeaders: any table the client reads, DecodeHeaders decodes too,
// and no input makes either panic.
func FuzzDecodeHeaders(f *testing.F) {
	f.Add([]byte{0, 0, 0, 7, 1, 'k', 'S', 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 3, 1, 'k', 'Z'})
	f.Add([]byte{0, 0, 0, 8, 1, 'a', 'A', 0, 0, 0, 2, 'V', 'V'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, derr := rabbitsub.DecodeHeaders(raw)
		if rabbitsub.CheckHeaders(raw) == nil && derr != nil {
			t.Fatalf("the client reads %x but DecodeHeaders fails: %v", raw, derr)
		}
	})
}
