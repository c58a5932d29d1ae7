package rabbitpub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// secret is the password of every URL below; it must never be printed.
const secret = "S3CRET"

// TestNewRejectsUnparsableURLWithoutThePassword: a URL that can never parse
// (an unescaped '%', '#' or '/' in the password, a bad escape in the path)
// is a permanent error from New that does not show the password.
func TestNewRejectsUnparsableURLWithoutThePassword(t *testing.T) {
	for _, raw := range []string{
		"amqp://user:" + secret + "@127.0.0.1:5672/%zz",
		"amqp://user:" + secret + "%@127.0.0.1:5672/",
		"amqp://user:" + secret + "#x@127.0.0.1:5672/",
		"amqp://user:" + secret + "/x@127.0.0.1:5672/",
		"amqps://user:" + secret + "@host:notaport/",
	} {
		_, err := rabbitpub.New(raw, gen)
		if err == nil {
			t.Errorf("New(%q) accepted it", raw)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New error shows the password: %v", err)
		}
		if !errors.Is(err, rabbitmq.ErrRefused) || !strings.HasPrefix(err.Error(), "rabbitpub: ") {
			t.Errorf("New(%q) = %v, want a rabbitpub error wrapping rabbitmq.ErrRefused", raw, err)
		}
	}
}

// TestPasswordNeverPrinted: formatting a Publisher with any verb, and the
// errors of a failing publish, never show the password.
func TestPasswordNeverPrinted(t *testing.T) {
	p, err := rabbitpub.New("amqp://user:"+secret+"@127.0.0.1:1/", gen,
		rabbitpub.WithFailoverURLs("amqp://other:"+secret+"@127.0.0.1:2/"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if s := fmt.Sprintf(verb, p); strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Errorf("%s of a Publisher shows the password: %s", verb, s)
		}
	}
	if s := fmt.Sprint(p); !strings.Contains(s, "127.0.0.1:1") || !strings.Contains(s, "127.0.0.1:2") {
		t.Errorf("%%v of a Publisher = %q, want the redacted URLs", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Publish to a dead node = %v, want an error without the password", err)
	}
}
