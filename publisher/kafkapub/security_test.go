package kafkapub_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// Publishing with WithTLS and WithSASL reaches a broker that requires
// both, with each SASL mechanism.
func TestTLSAndSASL(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	for _, m := range testenv.SASLMechanisms {
		t.Run(string(m), func(t *testing.T) {
			topic := testenv.Name(t, "topic")
			p := newPublisher(t, k.Brokers(), topic, kafkapub.WithTLS(k.TLS.ClientConfig()), kafkapub.WithSASL(k.SASL(t, m)))
			ctx := testenv.Context(t, 30*time.Second)
			if err := p.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			var msgs []publisher.Message
			for i := range 3 {
				msgs = append(msgs, publisher.Message{Type: "order.created", Key: []any{fmt.Sprint("o-", i)}, Body: []byte("{}")})
			}
			if err := p.PublishBatch(ctx, msgs...); err != nil {
				t.Fatalf("PublishBatch: %v", err)
			}
			if err := p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-9"}}); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if n, err := k.TopicSize(ctx, topic); err != nil || n != 4 {
				t.Fatalf("%d records in %s (%v), want 4", n, topic, err)
			}
		})
	}
}

// refusal checks that err is the prompt, clear refusal want, and shows
// no password.
func refusal(t *testing.T, what string, err error, took time.Duration, password string, want func(error) bool, text string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error", what)
	case !want(err) || !strings.Contains(err.Error(), text):
		t.Errorf("%s: %v; want an error saying %q", what, err, text)
	case strings.Contains(err.Error(), password):
		t.Errorf("%s: the error shows the password", what)
	case !strings.HasPrefix(err.Error(), "kafkapub: "):
		t.Errorf("%s: %v; want the package's prefix", what, err)
	}
	if took > 10*time.Second {
		t.Errorf("%s: failed after %v: it was retried, not refused at once", what, took)
	}
}

// A wrong password fails Publish, PublishBatch and Ping at once (the
// broker refused the credentials: retrying cannot help), with an error
// that says so and does not show the password.
func TestWrongPasswordFailsPromptly(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	topic := testenv.Name(t, "topic")
	if err := k.CreateTopic(testenv.Context(t, 10*time.Second), topic, 1); err != nil {
		t.Fatal(err)
	}
	isAuth := func(err error) bool { return errors.Is(err, kafkago.SASLAuthenticationFailed) }
	for _, m := range []kafkatest.SASLMechanism{kafkatest.SASLPlain, kafkatest.SASLScramSHA512} {
		p := newPublisher(t, k.Brokers(), topic, kafkapub.WithTLS(k.TLS.ClientConfig()), kafkapub.WithSASL(k.WrongSASL(t, m)))
		ctx := testenv.Context(t, 30*time.Second)

		start := time.Now()
		err := p.Ping(ctx)
		refusal(t, string(m)+" Ping", err, time.Since(start), k.Password, isAuth, "SASL Authentication Failed")

		start = time.Now()
		err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1"}})
		refusal(t, string(m)+" Publish", err, time.Since(start), k.Password, isAuth, "SASL Authentication Failed")
		var pe *publisher.PublishError
		if !errors.As(err, &pe) || pe.Attempts != 1 {
			t.Errorf("%s Publish: %#v; want a PublishError after 1 attempt", m, err)
		}

		start = time.Now()
		err = p.PublishBatch(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1"}}, publisher.Message{Type: "order.created", Key: []any{"o-2"}})
		refusal(t, string(m)+" PublishBatch", err, time.Since(start), k.Password, isAuth, "SASL Authentication Failed")
	}
	if n, err := k.TopicSize(testenv.Context(t, 10*time.Second), topic); err != nil || n != 0 {
		t.Errorf("%d records in %s (%v), want none", n, topic, err)
	}
}

// A client that does not trust the broker's certificate fails at once with
// an error that says why.
func TestUntrustedBrokerFailsPromptly(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	other := testenv.NewTLS(t)
	for _, tc := range []struct {
		name    string
		brokers []string
		tls     *tls.Config
		want    func(error) bool
		text    string
	}{
		{"untrusted CA", k.Brokers(), other.ClientConfig(), func(err error) bool {
			var v *tls.CertificateVerificationError
			return errors.As(err, &v)
		}, "certificate signed by unknown authority"},
		{"wrong server name", k.Brokers(), &tls.Config{RootCAs: k.TLS.Pool, ServerName: "kafka.example.com"}, func(err error) bool {
			var v *tls.CertificateVerificationError
			return errors.As(err, &v)
		}, "kafka.example.com"},
	} {
		p := newPublisher(t, tc.brokers, "orders", kafkapub.WithTLS(tc.tls), kafkapub.WithSASL(k.SASL(t, kafkatest.SASLPlain)))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := p.Ping(ctx)
		refusal(t, tc.name+" Ping", err, time.Since(start), k.Password, tc.want, tc.text)
		start = time.Now()
		err = p.Publish(ctx, publisher.Message{Type: "order.created", Key: []any{"o-1"}})
		refusal(t, tc.name+" Publish", err, time.Since(start), k.Password, tc.want, tc.text)
		cancel()
	}
}
