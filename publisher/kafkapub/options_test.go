package kafkapub_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// TestPartitioners: records land where the Java client's default
// partitioner (murmur2; vectors from Kafka's UtilsTest) and Sarama's hash
// partitioner (FNV-1a) put them.
func TestPartitioners(t *testing.T) {
	k := testenv.InProcessKafka(t)
	ctx := testenv.Context(t, 30*time.Second)
	const parts = 7
	javaMurmur2 := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	fnv1a := func(key string) int {
		h := fnv.New32a()
		h.Write([]byte(key))
		p := int32(h.Sum32()) % parts
		if p < 0 {
			p = -p
		}
		return int(p)
	}
	for _, tc := range []struct {
		name string
		p    kafkapub.Partitioner
		want func(key string) int
	}{
		{"murmur2", kafkapub.PartitionMurmur2, func(key string) int { return int(javaMurmur2[key]&0x7fffffff) % parts }},
		{"hash", kafkapub.PartitionHash, fnv1a},
		{"default", 0, fnv1a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := testenv.Name(t, "topic")
			if err := k.CreateTopic(ctx, topic, parts); err != nil {
				t.Fatal(err)
			}
			var opts []publisher.Option
			if tc.p != 0 {
				opts = append(opts, kafkapub.WithPartitioner(tc.p))
			}
			p := newPublisher(t, k.Brokers(), topic, opts...)
			var msgs []publisher.Message
			for key := range javaMurmur2 {
				msgs = append(msgs, publisher.Message{Type: "t", Key: []any{key}})
			}
			if err := p.PublishBatch(ctx, msgs...); err != nil {
				t.Fatal(err)
			}
			recs := readWithKcat(t, k.Brokers(), topic)
			if len(recs) != len(javaMurmur2) {
				t.Fatalf("%d records", len(recs))
			}
			for _, r := range recs {
				if want := tc.want(r.Key); r.Partition != want {
					t.Errorf("key %q in partition %d, want %d", r.Key, r.Partition, want)
				}
			}
		})
	}
}

// TestAcks: every level publishes; with AcksNone the call returns without
// the broker's answer, and the record still arrives.
func TestAcks(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	ctx := testenv.Context(t, 30*time.Second)
	for _, a := range []kafkapub.Acks{kafkapub.AcksAll, kafkapub.AcksLeader, kafkapub.AcksNone} {
		t.Run(a.String(), func(t *testing.T) {
			topic := testenv.Name(t, "topic")
			p := newPublisher(t, brokers, topic, kafkapub.WithAcks(a))
			if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}}); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				n, err := testenv.TopicSize(ctx, brokers, topic)
				if err == nil && n == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("topic holds %d records (%v), want 1", n, err)
				}
			}
		})
	}
}

// TestPing: Ping succeeds on an existing topic, names a missing one
// (ErrUnknownTopic) unless auto-creation is on, in which case it creates
// it, fails within its context on an unreachable cluster, and says the
// publisher is closed after Close.
func TestPing(t *testing.T) {
	k := testenv.InProcessKafka(t, kafkatest.WithoutAutoTopicCreation())
	ctx := testenv.Context(t, 30*time.Second)
	if err := k.CreateTopic(ctx, "orders", 0); err != nil {
		t.Fatal(err)
	}
	ping := func(topic string, opts ...publisher.Option) error {
		p, err := kafkapub.New(k.Brokers(), topic, gen, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		return p.Ping(ctx)
	}
	if err := ping("orders"); err != nil {
		t.Fatalf("Ping of an existing topic: %v", err)
	}
	err := ping("missing")
	if !errors.Is(err, kafkapub.ErrUnknownTopic) || !strings.Contains(err.Error(), `"missing"`) || !strings.Contains(err.Error(), k.Brokers()[0]) {
		t.Fatalf("Ping of a missing topic = %v, want ErrUnknownTopic naming topic and brokers", err)
	}

	auto := testenv.InProcessKafka(t)
	p, err := kafkapub.New(auto.Brokers(), "created", gen, kafkapub.WithAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("Ping with auto-creation: %v", err)
	}
	if _, err := auto.TopicSize(ctx, "created"); err != nil {
		t.Fatalf("the topic was not created: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Ping(ctx); !errors.Is(err, publisher.ErrClosed) || !strings.HasPrefix(err.Error(), "kafkapub: ") {
		t.Fatalf("Ping after Close = %v, want kafkapub: … ErrClosed", err)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dead, err := kafkapub.New([]string{addr}, "orders", gen)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err = dead.Ping(short)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.HasPrefix(err.Error(), "kafkapub: ") {
		t.Fatalf("Ping of an unreachable cluster = %v, want an error naming %s", err, addr)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("Ping returned after %v with a 2 s context", el)
	}
	t.Log(err)
}
