package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

// secureDeadLetters writes records to topic of k over TLS and SASL and
// runs a kafkasub consumer that dead-letters the one of id bad; it returns
// when both records are settled.
func secureDeadLetters(t *testing.T, k *testenv.SecureKafka, topic string, bad, good uuid.UUID) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	tr := &kafkago.Transport{TLS: k.TLS.ClientConfig(), SASL: k.SASL(t, kafkatest.SASLScramSHA256)}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: topic, Transport: tr, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafkaRecord("a", bad, []byte("secure body")), kafkaRecord("a", good, []byte("fine"))); err != nil {
		t.Fatal(err)
	}
	var ok seen
	runKafka(t, k.Brokers(), topic, testenv.Name(t, "group"), func(_ context.Context, m *consumer.Message) error {
		if m.ID == bad {
			return consumer.Permanent(errors.New("boom: secure"))
		}
		ok.add(m)
		return nil
	}, func() bool {
		n, _ := k.TopicSize(ctx, topic+consumer.DeadLetterSuffix)
		return ok.count(good) == 1 && n == 1
	}, kafkasub.WithTLS(k.TLS.ClientConfig()), kafkasub.WithSASL(k.SASL(t, kafkatest.SASLPlain)))
}

// noPassword fails t when any output shows the password.
func noPassword(t *testing.T, password string, outs ...string) {
	t.Helper()
	for _, o := range outs {
		if strings.Contains(o, password) {
			t.Fatalf("the output shows the password:\n%s", o)
		}
	}
}

// forge dlq show and redrive read and republish the dead letters of a
// cluster that requires TLS (a private CA) and SASL (each mechanism), with
// the password from KAFKA_PASSWORD; a wrong password is an error that says
// so without showing it, and so is a missing TLS or SASL flag.
func TestDLQKafkaTLSAndSASL(t *testing.T) {
	k := testenv.InProcessSecureKafka(t)
	topic := testenv.Name(t, "topic")
	bad, good := uuid.New(), uuid.New()
	secureDeadLetters(t, k, topic, bad, good)
	ca := k.TLS.WriteCA(t)
	env := map[string]string{envKafka: strings.Join(k.Brokers(), ","), envKafkaPassword: k.Password}
	sec := func(mech string) []string {
		return []string{"--topic", topic, "--kafka-ca", ca, "--kafka-sasl", mech, "--kafka-user", k.User}
	}

	for _, mech := range []string{"plain", "scram-sha-256", "SCRAM-SHA-512"} {
		out, errOut := dlqCLI(t, env, 0, append(append([]string{"show"}, sec(mech)...), bad.String())...)
		for _, want := range []string{"form:           plain", "boom: secure", "secure body", "original:       topic " + topic} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: show output lacks %q:\n%s", mech, want, out)
			}
		}
		noPassword(t, k.Password, out, errOut)
	}

	out, errOut := dlqCLI(t, env, 0, append([]string{"redrive", "--id", bad.String(), "--json"}, sec("scram-sha-512")...)...)
	noPassword(t, k.Password, out, errOut)
	lines := readLines(t, out)
	if len(lines) != 2 || lines[0].Action != "redriven" || lines[0].MessageID != bad.String() {
		t.Fatalf("redrive:\n%s", out)
	}
	if n, err := k.TopicSize(testenv.Context(t, 10*time.Second), topic); err != nil || n != 3 {
		t.Errorf("%d records in %s (%v), want the 2 originals and the redriven one", n, topic, err)
	}

	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"wrong password": {map[string]string{envKafka: env[envKafka], envKafkaPassword: k.Password + "-wrong"}, sec("scram-sha-256"),
			"SASL Authentication Failed"},
		"wrong password plain": {map[string]string{envKafka: env[envKafka], envKafkaPassword: "x" + k.Password}, sec("plain"),
			"SASL Authentication Failed"},
		"without SASL":      {env, []string{"--topic", topic, "--kafka-ca", ca}, "does the cluster require SASL (--kafka-sasl)"},
		"without TLS":       {env, []string{"--topic", topic, "--kafka-sasl", "plain", "--kafka-user", k.User}, "does the cluster require TLS"},
		"system roots only": {env, []string{"--topic", topic, "--kafka-tls", "--kafka-sasl", "plain", "--kafka-user", k.User}, "certificate signed by unknown authority"},
	} {
		args := append([]string{"list", "--timeout", "10s"}, tc.args...)
		start := time.Now()
		out, errOut := dlqCLI(t, tc.env, 1, args...)
		if !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: stderr %q; want it to say %q", name, errOut, tc.want)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s: failed after %v", name, time.Since(start))
		}
		noPassword(t, k.Password, out, errOut)
	}
}

// --kafka-cert and --kafka-key present a client certificate to a broker
// that requires one.
func TestDLQKafkaClientCertificate(t *testing.T) {
	k := testenv.InProcessMutualTLSKafka(t)
	topic := testenv.Name(t, "topic")
	bad, good := uuid.New(), uuid.New()
	// The consumer that makes the dead letter needs a certificate too.
	cfg := k.TLS.ClientConfig()
	cfg.Certificates = append(cfg.Certificates, k.TLS.ClientCert(t, "consumer"))
	func() {
		ctx := testenv.Context(t, 30*time.Second)
		if err := k.CreateTopic(ctx, topic, 1); err != nil {
			t.Fatal(err)
		}
		tr := &kafkago.Transport{TLS: cfg, SASL: k.SASL(t, kafkatest.SASLPlain)}
		defer tr.CloseIdleConnections()
		w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: topic, Transport: tr, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
		defer w.Close()
		if err := w.WriteMessages(ctx, kafkaRecord("a", bad, []byte("b")), kafkaRecord("a", good, []byte("g"))); err != nil {
			t.Fatal(err)
		}
		runKafka(t, k.Brokers(), topic, testenv.Name(t, "group"), func(_ context.Context, m *consumer.Message) error {
			if m.ID == bad {
				return consumer.Permanent(errors.New("boom"))
			}
			return nil
		}, func() bool {
			n, _ := k.TopicSize(ctx, topic+consumer.DeadLetterSuffix)
			return n == 1
		}, kafkasub.WithTLS(cfg), kafkasub.WithSASL(k.SASL(t, kafkatest.SASLPlain)))
	}()
	certFile, keyFile := k.TLS.WriteClientCert(t, "ops")
	env := map[string]string{envKafka: strings.Join(k.Brokers(), ","), envKafkaPassword: k.Password}
	base := []string{"list", "--json", "--timeout", "10s", "--topic", topic, "--kafka-ca", k.TLS.WriteCA(t), "--kafka-sasl", "plain", "--kafka-user", k.User}
	out, _ := dlqCLI(t, env, 0, append(base, "--kafka-cert", certFile, "--kafka-key", keyFile)...)
	if got := ids(readLines(t, out)); len(got) != 1 || got[0] != bad.String() {
		t.Errorf("list with a client certificate: %v", got)
	}
	dlqCLI(t, env, 1, base...)
}

// Inconsistent Kafka TLS and SASL flags are usage errors, found before
// anything connects; there is no flag for the password.
func TestDLQKafkaSecurityUsage(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pw = "S3CRET-pw"
	env := map[string]string{envKafka: "127.0.0.1:1", envKafkaPassword: pw}
	topic := []string{"list", "--topic", "orders"}
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		code int
		want string
	}{
		"sasl without user":      {env, []string{"--kafka-sasl", "plain"}, 2, "--kafka-sasl needs --kafka-user"},
		"sasl without password":  {map[string]string{envKafka: "127.0.0.1:1"}, []string{"--kafka-sasl", "plain", "--kafka-user", "u"}, 2, "$KAFKA_PASSWORD"},
		"unknown mechanism":      {env, []string{"--kafka-sasl", "gssapi", "--kafka-user", "u"}, 2, `--kafka-sasl "gssapi"`},
		"user without sasl":      {env, []string{"--kafka-user", "u"}, 2, "give --kafka-sasl too"},
		"cert without key":       {env, []string{"--kafka-cert", notPEM}, 2, "--kafka-cert and --kafka-key go together"},
		"key without cert":       {env, []string{"--kafka-key", notPEM}, 2, "--kafka-cert and --kafka-key go together"},
		"tls=false with ca":      {env, []string{"--kafka-tls=false", "--kafka-ca", notPEM}, 2, "need TLS"},
		"password flag":          {env, []string{"--kafka-password", pw}, 2, "flag provided but not defined: -kafka-password"},
		"ca not PEM":             {env, []string{"--kafka-ca", notPEM}, 1, "no PEM certificate"},
		"ca missing":             {env, []string{"--kafka-ca", filepath.Join(dir, "none.pem")}, 1, "--kafka-ca: open"},
		"cert not PEM":           {env, []string{"--kafka-cert", notPEM, "--kafka-key", notPEM}, 1, "--kafka-cert " + notPEM},
		"SCRAM refuses password": {map[string]string{envKafka: "127.0.0.1:1", envKafkaPassword: pw + "\u0007"}, []string{"--kafka-sasl", "scram-sha-256", "--kafka-user", "u"}, 1, "not valid for SCRAM"},
	} {
		code, out, errOut := runCLI(t, tc.env, append(append([]string{"dlq"}, topic...), tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit %d saying %q", name, code, errOut, tc.code, tc.want)
		}
		if strings.Contains(out+errOut, "S3CRET") && name != "password flag" {
			t.Errorf("%s: the output shows the password", name)
		}
	}
	for _, fl := range kafkaSecurityFlags {
		args := []string{"dlq", "list", "--queue", "orders", "--amqp", "amqp://127.0.0.1:1/", "--" + fl}
		if fl != "kafka-tls" {
			args = append(args, "x")
		}
		if code, _, errOut := runCLI(t, nil, args...); code != 2 || !strings.Contains(errOut, "--"+fl+" is for Kafka") {
			t.Errorf("--queue with --%s: exit %d, stderr:\n%s", fl, code, errOut)
		}
	}
	out, _ := dlqCLI(t, nil, 0, "help")
	for _, want := range []string{"--kafka-ca FILE", "$KAFKA_PASSWORD", "flags show in ps"} {
		if !strings.Contains(out, want) {
			t.Errorf("the usage text lacks %q", want)
		}
	}
}
