package kafkatest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

// metadata asks the broker for topic's metadata with the given client
// settings, for at most 30 s (a refusal comes well before).
func metadata(brokers []string, topic string, tc *tls.Config, m sasl.Mechanism) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := &kafkago.Transport{TLS: tc, SASL: m}
	defer t.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: t}
	resp, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err == nil && resp.Topics[0].Error != nil {
		err = resp.Topics[0].Error
	}
	return err
}

// A broker with TLS and SASL users serves clients that trust its
// certificate and authenticate with a user's mechanism and password, and
// refuses the others promptly; its own helpers authenticate.
func TestTLSAndSASL(t *testing.T) {
	k := testenv.InProcessSecureKafka(t, kafkatest.WithoutAutoTopicCreation())
	if err := k.CreateTopic(ctx(t), "orders", 2); err != nil {
		t.Fatalf("CreateTopic on a TLS and SASL broker: %v", err)
	}
	good := k.TLS.ClientConfig()
	for _, m := range []kafkatest.SASLMechanism{kafkatest.SASLPlain, kafkatest.SASLScramSHA256, kafkatest.SASLScramSHA512} {
		t.Run(string(m), func(t *testing.T) {
			mech := testenv.KafkaSASL(t, m, k.User, k.Password)
			tr := &kafkago.Transport{TLS: good, SASL: mech}
			defer tr.CloseIdleConnections()
			w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: "orders", Transport: tr,
				RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
			before, err := k.TopicSize(ctx(t), "orders")
			if err != nil {
				t.Fatal(err)
			}
			if err := w.WriteMessages(ctx(t), kafkago.Message{Value: []byte("v")}); err != nil {
				t.Fatalf("write with %s: %v", m, err)
			}
			if n, err := k.TopicSize(ctx(t), "orders"); err != nil || n != before+1 {
				t.Fatalf("TopicSize = %d, %v; want %d", n, err, before+1)
			}
			start := time.Now()
			err = metadata(k.Brokers(), "orders", good, testenv.KafkaSASL(t, m, k.User, "wrong-"+k.Password))
			if !errors.Is(err, kafkago.SASLAuthenticationFailed) {
				t.Errorf("wrong password: %v, want SASL Authentication Failed", err)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("wrong password refused after %v", time.Since(start))
			}
		})
	}

	other := testenv.NewTLS(t)
	for name, tc := range map[string]struct {
		tls  *tls.Config
		sasl sasl.Mechanism
	}{
		"without SASL":    {good, nil},
		"unknown user":    {good, plain.Mechanism{Username: "nobody", Password: k.Password}},
		"plain TCP":       {nil, plain.Mechanism{Username: k.User, Password: k.Password}},
		"untrusted CA":    {other.ClientConfig(), plain.Mechanism{Username: k.User, Password: k.Password}},
		"no CA at all":    {&tls.Config{RootCAs: other.Pool}, nil},
		"SCRAM for PLAIN": {good, testenv.KafkaSASL(t, kafkatest.SASLScramSHA256, "nobody", k.Password)},
	} {
		start := time.Now()
		err := metadata(k.Brokers(), "orders", tc.tls, tc.sasl)
		if err == nil {
			t.Errorf("%s: the broker answered", name)
		} else if strings.Contains(err.Error(), k.Password) {
			t.Errorf("%s: the error shows the password", name)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: refused after %v", name, d)
		}
	}
}

// With mutual TLS the broker requires a client certificate its CA signed;
// its own helpers present the server's.
func TestMutualTLS(t *testing.T) {
	c := testenv.NewTLS(t)
	k := kafkatest.Start(t, kafkatest.WithTLS(c.MutualServerConfig()))
	if err := k.CreateTopic(ctx(t), "orders", 1); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	if err := metadata(k.Brokers(), "orders", c.ClientConfig(), nil); err == nil {
		t.Error("a client without a certificate was served")
	}
	withCert := c.ClientConfig()
	withCert.Certificates = append(withCert.Certificates, c.ClientCert(t, "ops"))
	if err := metadata(k.Brokers(), "orders", withCert, nil); err != nil {
		t.Errorf("a client with a certificate: %v", err)
	}
	stranger := testenv.NewTLS(t)
	wrongCert := c.ClientConfig()
	wrongCert.Certificates = append(wrongCert.Certificates, stranger.ClientCert(t, "ops"))
	if err := metadata(k.Brokers(), "orders", wrongCert, nil); err == nil {
		t.Error("a client with a certificate of another CA was served")
	}
	// A restarted broker keeps its TLS settings.
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := metadata(k.Brokers(), "x", nil, nil); err == nil {
		t.Error("the restarted broker served plain TCP")
	}
}

func TestSecurityOptionsRejected(t *testing.T) {
	c := testenv.NewTLS(t)
	tlsOpt := kafkatest.WithTLS(c.ServerConfig())
	for name, opts := range map[string][]kafkatest.Option{
		"nil TLS":        {kafkatest.WithTLS(nil)},
		"no certificate": {kafkatest.WithTLS(&tls.Config{})},
		"mechanism":      {tlsOpt, kafkatest.WithSASLUser("GSSAPI", "u", "S3CRET")},
		"empty user":     {tlsOpt, kafkatest.WithSASLUser(kafkatest.SASLPlain, "", "S3CRET")},
		"empty password": {tlsOpt, kafkatest.WithSASLUser(kafkatest.SASLPlain, "u", "")},
		"bad SCRAM":      {tlsOpt, kafkatest.WithSASLUser(kafkatest.SASLScramSHA256, "u", "S3CRET\u0007")},
		"duplicate user": {kafkatest.WithSASLUser(kafkatest.SASLPlain, "u", "S3CRET"), kafkatest.WithSASLUser(kafkatest.SASLPlain, "u", "S3CRET")},
	} {
		b, err := kafkatest.New(opts...)
		if err == nil {
			b.Close()
			t.Errorf("%s: New accepted it", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "kafkatest: With") || strings.Contains(err.Error(), "S3CRET") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
