package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/uuidforge/uuidforge/kafkatest"
)

// Kafka is an in-process Kafka broker ([kafkatest.Broker]) or, when
// KAFKA_BROKERS is set, a handle on a real cluster.
type Kafka struct {
	broker  *kafkatest.Broker // nil for a real cluster
	brokers []string
}

// KafkaOption configures [StartKafka]: any [kafkatest.Option].
type KafkaOption = kafkatest.Option

// KafkaDataDir keeps the in-process broker's data in dir, so a broker started
// again on the same dir has the same topics, records and committed offsets.
func KafkaDataDir(dir string) KafkaOption { return kafkatest.WithDataDir(dir) }

// KafkaPorts makes the in-process broker listen on the given ports (one per
// broker) instead of random ones, so clients can reconnect after a restart.
func KafkaPorts(ports ...int) KafkaOption { return kafkatest.WithPorts(ports...) }

// StartKafka starts an in-process broker ([kafkatest.New]: one node,
// automatic topic creation, 3 partitions per topic), unless KAFKA_BROKERS
// names a real cluster, which is then used as is and opts are ignored.
func StartKafka(opts ...KafkaOption) (*Kafka, error) {
	if env := os.Getenv(EnvKafka); env != "" {
		return &Kafka{brokers: strings.Split(env, ",")}, nil
	}
	b, err := kafkatest.New(opts...)
	if err != nil {
		return nil, err
	}
	return &Kafka{broker: b, brokers: b.Brokers()}, nil
}

// KafkaNumBrokers makes the in-process cluster run n brokers instead of 1
// (see [kafkatest.WithBrokers]); [kafkatest.Broker.MoveLeader] then moves a
// partition's leader between them.
func KafkaNumBrokers(n int) KafkaOption { return kafkatest.WithBrokers(n) }

// Brokers returns the bootstrap addresses.
func (k *Kafka) Brokers() []string { return k.brokers }

// InProcess reports whether the broker runs inside this process.
func (k *Kafka) InProcess() bool { return k.broker != nil }

// Broker returns the in-process broker, nil for a real cluster.
func (k *Kafka) Broker() *kafkatest.Broker { return k.broker }

// Close stops an in-process broker; it does nothing for a real cluster.
func (k *Kafka) Close() {
	if k.broker != nil {
		k.broker.Close()
	}
}

// KafkaBrokers starts Kafka for one test (see [StartKafka]) and stops it when
// the test ends.
func KafkaBrokers(t testing.TB, opts ...KafkaOption) []string {
	t.Helper()
	return StartKafkaT(t, opts...).Brokers()
}

// StartKafkaT is [StartKafka] for one test: the broker stops when the test
// ends, and a broker that cannot start makes the test [Unavailable].
func StartKafkaT(t testing.TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	k, err := StartKafka(opts...)
	if err != nil {
		Unavailable(t, "Kafka", err)
	}
	t.Cleanup(k.Close)
	return k
}

// InProcessKafka starts an in-process broker for one test even when
// KAFKA_BROKERS names a real cluster, for tests that stop, restart or
// reconfigure the broker. It stops when the test ends.
func InProcessKafka(t testing.TB, opts ...KafkaOption) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.New(opts...)
	if err != nil {
		Unavailable(t, "in-process Kafka", err)
	}
	t.Cleanup(b.Close)
	return b
}

// TopicSize returns the number of records in topic (last minus first offset,
// summed over its partitions): what a replay from offset 0 reads.
func TopicSize(ctx context.Context, brokers []string, topic string) (int, error) {
	return kafkatest.TopicSize(ctx, brokers, topic)
}

// SecureKafka is an in-process broker that requires TLS and SASL, as a
// managed Kafka service does.
type SecureKafka struct {
	*kafkatest.Broker
	// TLS made the broker's certificate: TLS.ClientConfig() trusts it.
	TLS *TLS
	// User and Password authenticate with each of PLAIN, SCRAM-SHA-256
	// and SCRAM-SHA-512. The password is random, so that a test can check
	// that no error or output shows it.
	User, Password string
}

// InProcessSecureKafka starts, for one test, an in-process broker that
// accepts only TLS connections (with a certificate of a new [TLS]) from
// clients authenticated with SASL as User and Password, and stops it when
// the test ends. opts add to those settings.
func InProcessSecureKafka(t testing.TB, opts ...KafkaOption) *SecureKafka {
	t.Helper()
	return inProcessSecureKafka(t, NewTLS(t), false, opts)
}

// InProcessMutualTLSKafka is [InProcessSecureKafka] whose broker also
// requires a client certificate signed by its [TLS] (mutual TLS).
func InProcessMutualTLSKafka(t testing.TB, opts ...KafkaOption) *SecureKafka {
	t.Helper()
	return inProcessSecureKafka(t, NewTLS(t), true, opts)
}

func inProcessSecureKafka(t testing.TB, c *TLS, mutual bool, opts []KafkaOption) *SecureKafka {
	t.Helper()
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		t.Fatal(err)
	}
	k := &SecureKafka{TLS: c, User: "forge-test", Password: "pw-" + hex.EncodeToString(pw)}
	cfg := c.ServerConfig()
	if mutual {
		cfg = c.MutualServerConfig()
	}
	all := []KafkaOption{kafkatest.WithTLS(cfg)}
	for _, m := range SASLMechanisms {
		all = append(all, kafkatest.WithSASLUser(m, k.User, k.Password))
	}
	k.Broker = InProcessKafka(t, append(all, opts...)...)
	return k
}

// KafkaSASL returns kafka-go's mechanism m (PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512) for user and password.
func KafkaSASL(t testing.TB, m kafkatest.SASLMechanism, user, password string) sasl.Mechanism {
	t.Helper()
	switch m {
	case kafkatest.SASLPlain:
		return plain.Mechanism{Username: user, Password: password}
	case kafkatest.SASLScramSHA256, kafkatest.SASLScramSHA512:
		algo := scram.SHA256
		if m == kafkatest.SASLScramSHA512 {
			algo = scram.SHA512
		}
		s, err := scram.Mechanism(algo, user, password)
		if err != nil {
			t.Fatalf("testenv: SCRAM mechanism for %q: the name or password is not valid for SCRAM", user)
		}
		return s
	}
	t.Fatalf("testenv: unknown SASL mechanism %q", m)
	return nil
}

// SASLMechanisms are the mechanisms [SecureKafka]'s user authenticates with.
var SASLMechanisms = []kafkatest.SASLMechanism{kafkatest.SASLPlain, kafkatest.SASLScramSHA256, kafkatest.SASLScramSHA512}

// SASL returns mechanism m with k's user and password.
func (k *SecureKafka) SASL(t testing.TB, m kafkatest.SASLMechanism) sasl.Mechanism {
	t.Helper()
	return KafkaSASL(t, m, k.User, k.Password)
}

// WrongSASL returns mechanism m with k's user and a wrong password, which
// contains k.Password (so that a test that looks for k.Password in an
// error also finds the wrong one).
func (k *SecureKafka) WrongSASL(t testing.TB, m kafkatest.SASLMechanism) sasl.Mechanism {
	t.Helper()
	return KafkaSASL(t, m, k.User, k.Password+"-wrong")
}
