package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
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
	return startInProcess(opts...)
}

func startInProcess(opts ...KafkaOption) (*Kafka, error) {
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

// KafkaNumBrokers makes the in-process cluster run n brokers (node IDs 0 to
// n-1) instead of 1.
func KafkaNumBrokers(n int) KafkaOption { return kfake.NumBrokers(n) }

// InProcessKafka starts an in-process cluster for one test, even when
// KAFKA_BROKERS names a real one, and stops it when the test ends: for tests
// that act on the brokers through [Kafka.Control] (move a partition's leader,
// add or remove a broker).
func InProcessKafka(t testing.TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	k, err := startInProcess(opts...)
	if err != nil {
		Unavailable(t, "Kafka (in-process)", err)
	}
	t.Cleanup(k.Close)
	return k
}

// Control returns the in-process cluster's control API, or nil for a real
// cluster. Among others: MoveTopicPartition(topic, partition, node) moves a
// partition's leader (clients see NOT_LEADER_FOR_PARTITION and reload
// metadata), LeaderFor, ShufflePartitionLeaders, AddNode, RemoveNode,
// CoordinatorFor and RehashCoordinators.
func (k *Kafka) Control() *kfake.Cluster { return k.cluster }

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

// TopicSize returns the number of records in topic (last minus first offset,
// summed over its partitions): what a replay from offset 0 reads.
func TopicSize(ctx context.Context, brokers []string, topic string) (int, error) {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("testenv: metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 {
		return 0, fmt.Errorf("testenv: metadata of %s: %d topics in the answer", topic, len(meta.Topics))
	}
	if meta.Topics[0].Error != nil {
		return 0, fmt.Errorf("testenv: metadata of %s: %w", topic, meta.Topics[0].Error)
	}
	var reqs []kafkago.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
	}
	resp, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, fmt.Errorf("testenv: offsets of %s: %w", topic, err)
	}
	n := 0
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("testenv: offsets of %s/%d: %w", topic, p.Partition, p.Error)
		}
		n += int(p.LastOffset - p.FirstOffset)
	}
	return n, nil
}
