package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/kafkatest"
)

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func write(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{}, AllowAutoTopicCreation: true}
	defer w.Close()
	var msgs []kafkago.Message
	for i := range n {
		msgs = append(msgs, kafkago.Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")})
	}
	var err error
	for range 50 { // automatic creation is asynchronous
		if err = w.WriteMessages(ctx(t), msgs...); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("write: %v", err)
}

func TestCreateTopicAndSize(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithoutAutoTopicCreation())
	if _, err := k.TopicSize(ctx(t), "orders"); err == nil {
		t.Fatal("TopicSize of a missing topic without auto-creation succeeded")
	}
	if err := k.CreateTopic(ctx(t), "orders", 5); err != nil {
		t.Fatal(err)
	}
	if err := k.CreateTopic(ctx(t), "orders", 5); err == nil {
		t.Fatal("creating an existing topic succeeded")
	}
	write(t, k.Brokers(), "orders", 20)
	n, err := k.TopicSize(ctx(t), "orders")
	if err != nil || n != 20 {
		t.Fatalf("TopicSize = %d, %v; want 20", n, err)
	}
	meta, err := (&kafkago.Client{Addr: kafkago.TCP(k.Brokers()...), Transport: &kafkago.Transport{}}).Metadata(ctx(t), &kafkago.MetadataRequest{Topics: []string{"orders"}})
	if err != nil || len(meta.Topics) != 1 || len(meta.Topics[0].Partitions) != 5 {
		t.Fatalf("metadata: %+v, %v; want 5 partitions", meta, err)
	}
}

func TestAutoCreatedTopicHasDefaultPartitions(t *testing.T) {
	for _, tc := range []struct {
		opts []kafkatest.Option
		want int
	}{{nil, kafkatest.DefaultPartitions}, {[]kafkatest.Option{kafkatest.WithPartitions(7)}, 7}} {
		k := kafkatest.Start(t, tc.opts...)
		write(t, k.Brokers(), "auto", 1)
		meta, err := (&kafkago.Client{Addr: kafkago.TCP(k.Brokers()...), Transport: &kafkago.Transport{}}).Metadata(ctx(t), &kafkago.MetadataRequest{Topics: []string{"auto"}})
		if err != nil || len(meta.Topics[0].Partitions) != tc.want {
			t.Fatalf("metadata: %+v, %v; want %d partitions", meta, err, tc.want)
		}
	}
}

// TestRestartKeepsData: with a data dir, a restarted broker answers at the
// same address with its records and committed offsets.
func TestRestartKeepsData(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithDataDir(t.TempDir()))
	addr := k.Brokers()
	write(t, addr, "kept", 4)
	client := &kafkago.Client{Addr: kafkago.TCP(addr...), Transport: &kafkago.Transport{}}
	if _, err := client.OffsetCommit(ctx(t), &kafkago.OffsetCommitRequest{GroupID: "g", GenerationID: -1,
		Topics: map[string][]kafkago.OffsetCommit{"kept": {{Partition: 0, Offset: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := k.Brokers(); fmt.Sprint(got) != fmt.Sprint(addr) {
		t.Fatalf("addresses after restart %v, before %v", got, addr)
	}
	n, err := k.TopicSize(ctx(t), "kept")
	if err != nil || n != 4 {
		t.Fatalf("TopicSize after restart = %d, %v; want 4", n, err)
	}
	off, err := k.Committed(ctx(t), "g", "kept")
	if err != nil || off[0] != 1 {
		t.Fatalf("Committed after restart = %v, %v; want partition 0 at 1", off, err)
	}
}

func TestFixedPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	k := kafkatest.Start(t, kafkatest.WithPorts(port))
	if got, want := k.Brokers(), []string{fmt.Sprintf("127.0.0.1:%d", port)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Brokers = %v, want %v", got, want)
	}
	k.Close()
	k.Close() // again: nothing
	if c, err := net.DialTimeout("tcp", k.Brokers()[0], time.Second); err == nil {
		c.Close()
		t.Fatal("the closed broker still accepts connections")
	}
}

// TestMoveLeader: after the leader moves, a write to the old leader is
// refused with "not leader", and a client that looks up the leader again
// succeeds.
func TestMoveLeader(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithBrokers(2))
	if len(k.Brokers()) != 2 {
		t.Fatalf("Brokers = %v", k.Brokers())
	}
	if err := k.CreateTopic(ctx(t), "moving", 1); err != nil {
		t.Fatal(err)
	}
	leader := func() int {
		// A new transport: the default one caches metadata.
		client := &kafkago.Client{Addr: kafkago.TCP(k.Brokers()...), Transport: &kafkago.Transport{}}
		meta, err := client.Metadata(ctx(t), &kafkago.MetadataRequest{Topics: []string{"moving"}})
		if err != nil {
			t.Fatal(err)
		}
		return meta.Topics[0].Partitions[0].Leader.ID
	}
	before := leader()
	if err := k.MoveLeader("moving", 0, 1-before); err != nil {
		t.Fatal(err)
	}
	if after := leader(); after != 1-before {
		t.Fatalf("leader %d after moving from %d", after, before)
	}
	conn, err := kafkago.DialContext(ctx(t), "tcp", k.Brokers()[before])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A produce to the old leader is refused.
	_, err = (&kafkago.Client{Addr: kafkago.TCP(k.Brokers()[before]), Transport: &kafkago.Transport{}}).Produce(ctx(t), &kafkago.ProduceRequest{
		Addr: kafkago.TCP(k.Brokers()[before]), Topic: "moving", Partition: 0, RequiredAcks: kafkago.RequireAll,
		Records: kafkago.NewRecordReader(kafkago.Record{Value: kafkago.NewBytes([]byte("x"))})})
	if err == nil {
		t.Log("the client found the new leader on its own")
	}
	write(t, k.Brokers(), "moving", 3)
	if err := k.MoveLeader("moving", 0, 5); err == nil {
		t.Fatal("moving to a missing node succeeded")
	}
}

func TestMinSessionTimeout(t *testing.T) {
	join := func(k *kafkatest.Broker) error {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: k.Brokers(), Topic: "s", GroupID: "g",
			SessionTimeout: time.Second, HeartbeatInterval: 100 * time.Millisecond, MaxWait: 50 * time.Millisecond})
		defer r.Close()
		c, cancel := context.WithTimeout(ctx(t), 5*time.Second)
		defer cancel()
		_, err := r.FetchMessage(c)
		return err
	}
	short := kafkatest.Start(t, kafkatest.WithMinSessionTimeout(500*time.Millisecond))
	write(t, short.Brokers(), "s", 1)
	if err := join(short); err != nil {
		t.Fatalf("a 1 s session with a 500 ms minimum: %v", err)
	}
	def := kafkatest.Start(t)
	write(t, def.Brokers(), "s", 1)
	if err := join(def); err == nil {
		t.Fatal("a 1 s session accepted under the default 6 s minimum")
	}
}

func TestOptionsValidated(t *testing.T) {
	for name, opts := range map[string][]kafkatest.Option{
		"brokers":       {kafkatest.WithBrokers(0)},
		"partitions":    {kafkatest.WithPartitions(0)},
		"data dir":      {kafkatest.WithDataDir("")},
		"no port":       {kafkatest.WithPorts()},
		"bad port":      {kafkatest.WithPorts(70000)},
		"port count":    {kafkatest.WithBrokers(2), kafkatest.WithPorts(30001)},
		"session":       {kafkatest.WithMinSessionTimeout(0)},
		"broker config": {kafkatest.WithBrokerConfig("", "1")},
		"session twice": {kafkatest.WithMinSessionTimeout(time.Second), kafkatest.WithBrokerConfig("group.min.session.timeout.ms", "2000")},
	} {
		if k, err := kafkatest.New(opts...); err == nil {
			k.Close()
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "kafkatest: ") {
			t.Errorf("%s: error %q does not start with the package name", name, err)
		}
	}
}

// TestMessageSizeLimit: the broker refuses a record batch above
// message.max.bytes, as Kafka does.
func TestMessageSizeLimit(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithBrokerConfig("message.max.bytes", "2000"))
	write(t, k.Brokers(), "limited", 1)
	w := &kafkago.Writer{Addr: kafkago.TCP(k.Brokers()...), Topic: "limited", RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, MaxAttempts: 1}
	defer w.Close()
	err := w.WriteMessages(ctx(t), kafkago.Message{Value: make([]byte, 3000)})
	var we kafkago.WriteErrors
	if !errors.As(err, &we) || len(we) != 1 || !errors.Is(we[0], kafkago.MessageSizeTooLarge) {
		t.Fatalf("3000-byte record under a 2000-byte limit: %v, want MessageSizeTooLarge", err)
	}
}

// TestMoveLeaderWhileClosing: MoveLeader racing with Close returns (an
// error once the broker is closed) instead of waiting forever on the
// closed cluster.
func TestMoveLeaderWhileClosing(t *testing.T) {
	for i := range 50 {
		k, err := kafkatest.New(kafkatest.WithBrokers(2))
		if err != nil {
			t.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		for range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
						_ = k.MoveLeader("none", 0, 1) // the topic does not exist: an error
					}
				}
			}()
		}
		time.Sleep(time.Millisecond)
		k.Close()
		close(stop)
		timeout := time.After(5 * time.Second)
		for range 4 {
			select {
			case <-done:
			case <-timeout:
				t.Fatalf("round %d: MoveLeader still waiting 5 s after Close", i)
			}
		}
	}
}
