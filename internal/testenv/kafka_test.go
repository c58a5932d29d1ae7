package testenv

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestKafkaGoAgainstBroker checks that kafka-go's Writer and a consumer-group
// Reader work against the broker every package's tests use.
func TestKafkaGoAgainstBroker(t *testing.T) {
	brokers := KafkaBrokers(t)
	topic := Name(t, "topic")
	ctx := Context(t, 30*time.Second)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond, Balancer: &kafka.Hash{}}
	defer w.Close()
	var err error
	for i := 0; i < 50; i++ { // topic creation is asynchronous
		if err = w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte("v1")}, kafka.Message{Key: []byte("k"), Value: []byte("v2")}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: Name(t, "group"), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for _, want := range []string{"v1", "v2"} {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if string(m.Value) != want {
			t.Fatalf("got %q, want %q", m.Value, want)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
}

// TestKafkaFromEnvironment: KAFKA_BROKERS selects a real cluster, used as
// is; InProcessKafka starts the in-process broker regardless.
func TestKafkaFromEnvironment(t *testing.T) {
	t.Setenv(EnvKafka, "kafka-1:9092,kafka-2:9092")
	k, err := StartKafka(KafkaPorts(1))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.InProcess() || k.Broker() != nil || len(k.Brokers()) != 2 || k.Brokers()[1] != "kafka-2:9092" {
		t.Fatalf("with %s set: in process %v, brokers %v", EnvKafka, k.InProcess(), k.Brokers())
	}
	b := InProcessKafka(t)
	if len(b.Brokers()) != 1 || b.Brokers()[0] == "kafka-1:9092" {
		t.Fatalf("InProcessKafka brokers %v", b.Brokers())
	}
}
