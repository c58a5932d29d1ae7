package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process Kafka-protocol broker (kfake) or, when KAFKA_BROKERS
// is set, a handle on a real cluster.
type Kafka struct {
	cluster *kfake.Cluster // nil for a real cluster
	brokers []string
}

// KafkaOption configures [StartKafka].
type KafkaOption = kfake.Opt

// KafkaDataDir keeps the in-process broker's data in dir, so a broker started
// again on the same dir has the same topics, records and committed offsets.
func KafkaDataDir(dir string) KafkaOption { return kfake.DataDir(dir) }

// KafkaPorts makes the in-process broker listen on the given ports (one per
// broker) instead of random ones, so clients can reconnect after a restart.
func KafkaPorts(ports ...int) KafkaOption { return kfake.Ports(ports...) }

// StartKafka starts an in-process single-broker cluster with automatic topic
// creation and 3 partitions per topic, unless KAFKA_BROKERS names a real
// cluster, which is then used as is and opts are ignored.
func StartKafka(opts ...KafkaOption) (*Kafka, error) {
	if env := os.Getenv(EnvKafka); env != "" {
		return &Kafka{brokers: strings.Split(env, ",")}, nil
	}
	base := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3),
	}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("testenv: start in-process kafka: %w", err)
	}
	return &Kafka{cluster: c, brokers: c.ListenAddrs()}, nil
}

// Brokers returns the bootstrap addresses.
func (k *Kafka) Brokers() []string { return k.brokers }

// InProcess reports whether the broker runs inside this process.
func (k *Kafka) InProcess() bool { return k.cluster != nil }

// Close stops an in-process broker; it does nothing for a real cluster.
func (k *Kafka) Close() {
	if k.cluster != nil {
		k.cluster.Close()
	}
}

// KafkaBrokers starts Kafka for one test (see [StartKafka]) and stops it when
// the test ends.
func KafkaBrokers(t testing.TB, opts ...KafkaOption) []string {
	t.Helper()
	k, err := StartKafka(opts...)
	if err != nil {
		Unavailable(t, "Kafka", err)
	}
	t.Cleanup(k.Close)
	return k.Brokers()
}
