package kafkasub_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

// A consumer with WithTLS and WithSASL reads a topic of a broker that
// requires both, writes a dead letter there, commits, and pings it.
func TestTLSAndSASL(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	ctx := testenv.Context(t, 60*time.Second)
	if err := k.CreateTopic(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	tr := &kafkago.Transport{TLS: k.TLS.ClientConfig(), SASL: k.SASL(t, kafkatest.SASLPlain)}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: topic, Transport: tr, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{}}
	defer w.Close()
	poison := uuid.New()
	good := []uuid.UUID{uuid.New(), uuid.New()}
	if err := w.WriteMessages(ctx, idMessage("a", good[0], "one"), idMessage("b", poison, "poison"), idMessage("c", good[1], "two")); err != nil {
		t.Fatal(err)
	}

	for _, m := range testenv.SASLMechanisms {
		c := newConsumer(t, readerConfig(k.Brokers(), topic, group), consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }),
			kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(k.SASL(t, m)))
		if err := c.Ping(ctx); err != nil {
			t.Errorf("%s: Ping: %v", m, err)
		}
	}

	var mu sync.Mutex
	handled := map[uuid.UUID]bool{}
	h := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		if m.ID == poison {
			return consumer.Permanent(errors.New("boom: poison"))
		}
		mu.Lock()
		handled[m.ID] = true
		mu.Unlock()
		return nil
	})
	c := newConsumer(t, readerConfig(k.Brokers(), topic, group), h,
		kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(k.SASL(t, kafkatest.SASLScramSHA512)))
	r := start(t, c)
	dlt := topic + consumer.DeadLetterSuffix
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n, _ := k.TopicSize(ctx, dlt)
		offs, _ := k.Committed(ctx, group, topic) // the group may not exist yet
		done := sum(offs) == 3
		mu.Lock()
		all := handled[good[0]] && handled[good[1]]
		mu.Unlock()
		if n == 1 && all && done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Stop(t)
	n, err := k.TopicSize(ctx, dlt)
	if err != nil || n != 1 {
		t.Errorf("%d dead letters in %s (%v), want 1", n, dlt, err)
	}
	if !handled[good[0]] || !handled[good[1]] {
		t.Errorf("handled %v, want both good records", handled)
	}
	if got := secureCommitted(t, k, group, topic); sum(got) != 3 {
		t.Errorf("committed offsets %v, want the 3 records", got)
	}
}

func secureCommitted(t *testing.T, k *testenv.SecureKafka, group, topic string) map[int]int64 {
	t.Helper()
	m, err := k.Committed(testenv.Context(t, 10*time.Second), group, topic)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Refused authentication ends Run at once, and fails Ping, with an error
// that says why and does not show the password; Run does not join the
// group over and over until its context ends.
func TestRefusedAuthenticationEndsRun(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	topic := testenv.Name(t, "topic")
	if err := k.CreateTopic(testenv.Context(t, 10*time.Second), topic, 1); err != nil {
		t.Fatal(err)
	}
	isAuth := func(err error) bool { return errors.Is(err, kafkago.SASLAuthenticationFailed) }
	isCert := func(err error) bool {
		var v *tls.CertificateVerificationError
		return errors.As(err, &v)
	}
	for _, tc := range []struct {
		name string
		opts []consumer.Option
		want func(error) bool
		text string
	}{
		{"wrong password PLAIN", []consumer.Option{kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(k.WrongSASL(t, kafkatest.SASLPlain))},
			isAuth, "SASL Authentication Failed"},
		{"wrong password SCRAM-SHA-256", []consumer.Option{kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(k.WrongSASL(t, kafkatest.SASLScramSHA256))},
			isAuth, "SASL Authentication Failed"},
		{"unknown user", []consumer.Option{kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(plain.Mechanism{Username: "nobody", Password: k.Password})},
			isAuth, "SASL Authentication Failed"},
		{"untrusted CA", []consumer.Option{kafkasub.WithTLS(testenv.NewTLS(t).ClientConfig()), kafkasub.WithSASL(k.SASL(t, kafkatest.SASLPlain))},
			isCert, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConsumer(t, readerConfig(k.Brokers(), topic, testenv.Name(t, "group")),
				consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }), tc.opts...)
			check := func(what string, err error, took time.Duration) {
				t.Helper()
				switch {
				case err == nil:
					t.Errorf("%s: no error", what)
				case !tc.want(err) || !strings.Contains(err.Error(), tc.text):
					t.Errorf("%s: %v; want an error saying %q", what, err, tc.text)
				case strings.Contains(err.Error(), k.Password):
					t.Errorf("%s: the error shows the password", what)
				case !strings.HasPrefix(err.Error(), "kafkasub: "):
					t.Errorf("%s: %v; want the package's prefix", what, err)
				}
				if took > 10*time.Second {
					t.Errorf("%s: returned after %v: it retried", what, took)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			begin := time.Now()
			check("Ping", c.Ping(ctx), time.Since(begin))
			begin = time.Now()
			check("Run", c.Run(ctx), time.Since(begin))
		})
	}
}

// WithTLS and WithSASL are validated, conflict with a Dialer of
// WithReaderConfig that has its own, complete one that has not, and
// require a dead-letter writer to bring its own Transport.
func TestSecurityOptions(t *testing.T) {
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	brokers := []string{"127.0.0.1:9092"}
	tc := &tls.Config{ServerName: "kafka"}
	mech := plain.Mechanism{Username: "u", Password: "S3CRET"}
	for name, opts := range map[string][]consumer.Option{
		"nil TLS":       {kafkasub.WithTLS(nil)},
		"nil mechanism": {kafkasub.WithSASL(nil)},
		"dialer TLS": {kafkasub.WithTLS(tc), kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) {
			rc.Dialer = &kafkago.Dialer{TLS: &tls.Config{}}
		})},
		"dialer SASL": {kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) {
			rc.Dialer = &kafkago.Dialer{SASLMechanism: mech}
		}), kafkasub.WithSASL(mech)},
		"dl writer without transport": {kafkasub.WithSASL(mech), kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "dl"})},
	} {
		_, err := kafkasub.New(brokers, "t", "g", h, opts...)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "kafkasub: kafkasub.With") || strings.Contains(err.Error(), "S3CRET") {
			t.Errorf("%s: %v", name, err)
		}
	}

	own := &kafkago.Dialer{ClientID: "billing", Timeout: 3 * time.Second}
	c, err := kafkasub.New(brokers, "t", "g", h, kafkasub.WithTLS(tc), kafkasub.WithSASL(mech),
		kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.Dialer = own }),
		kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "dl", Transport: &kafkago.Transport{}}))
	if err != nil {
		t.Fatal(err)
	}
	d := kafkasub.ReaderDialer(c)
	if d.TLS != tc || d.SASLMechanism != mech || d.ClientID != "billing" || d.Timeout != 3*time.Second {
		t.Errorf("dialer %+v: want the reader config's with the TLS and SASL options", d)
	}
	if own.TLS != nil || own.SASLMechanism != nil {
		t.Error("New changed the caller's Dialer")
	}
	holder := struct{ c *kafkasub.Consumer }{c}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		for _, v := range []any{c, holder} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, "S3CRET") || strings.Contains(got, "533343524554") {
				t.Errorf("%s shows the password: %s", verb, got)
			}
		}
	}
	c, err = kafkasub.New(brokers, "t", "g", h, kafkasub.WithTLS(tc))
	if err != nil {
		t.Fatal(err)
	}
	if d := kafkasub.ReaderDialer(c); d.TLS != tc || d.Timeout != kafkago.DefaultDialer.Timeout {
		t.Errorf("dialer %+v: want kafka-go's default with the TLS config", d)
	}
}
