package kafkasub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
)

func writer(t *testing.T, brokers []string, topic string) *kafkago.Writer {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{}}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func write(t *testing.T, w *kafkago.Writer, msgs ...kafkago.Message) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	var err error
	for range 50 { // topic creation is asynchronous
		if err = w.WriteMessages(ctx, msgs...); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("write: %v", err)
}

func rawReaderConfig(brokers []string, topic, group string) kafkago.ReaderConfig {
	return kafkago.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: group, StartOffset: kafkago.FirstOffset,
		MaxWait: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond, ReadBackoffMin: 10 * time.Millisecond,
		ReadBackoffMax: 50 * time.Millisecond, PartitionWatchInterval: 100 * time.Millisecond,
	}
}

func idMessage(key string, id uuid.UUID, body string) kafkago.Message {
	return kafkago.Message{Key: []byte(key), Value: []byte(body), Headers: []kafkago.Header{
		{Key: lineage.HeaderMessageID, Value: []byte(id.String())},
		{Key: lineage.HeaderMessageType, Value: []byte("test")},
	}}
}

type running = testsink.Running

func start(t *testing.T, c *kafkasub.Consumer) *running {
	t.Helper()
	return testsink.Start(t, c.Run)
}

func chain(t *testing.T, store dedupe.Store, scope string, inner consumer.Handler, opts ...consumer.Option) consumer.Handler {
	t.Helper()
	dd := consumer.Dedupe(store, scope, opts...)
	return consumer.Chain(consumer.Lineage(), dd, consumer.Recover())(inner)
}

// target names what a consumer reads.
type target struct {
	brokers      []string
	topic, group string
}

func readerConfig(brokers []string, topic, group string) target { return target{brokers, topic, group} }

func newConsumer(t *testing.T, rc target, h consumer.Handler, opts ...consumer.Option) *kafkasub.Consumer {
	t.Helper()
	opts = append([]consumer.Option{consumer.WithBackoff(5*time.Millisecond, 50*time.Millisecond), consumer.WithShutdownTimeout(10 * time.Second)}, opts...)
	c, err := kafkasub.New(rc.brokers, rc.topic, rc.group, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counter counts deliveries reaching the chain.
type counter struct{ n atomic.Int64 }

func (c *counter) wrap(next consumer.Handler) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		c.n.Add(1)
		return next.Handle(ctx, m)
	})
}

// resetOffsets commits offset 0 on every partition for group (which must
// have no members): the next member reads the topic from the start.
func resetOffsets(t *testing.T, brokers []string, topic, group string, partitions int) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	var commits []kafkago.OffsetCommit
	for p := range partitions {
		commits = append(commits, kafkago.OffsetCommit{Partition: p, Offset: 0})
	}
	var err error
	for range 50 { // the group may still be finishing its last members' leave
		var resp *kafkago.OffsetCommitResponse
		resp, err = client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{
			Addr: kafkago.TCP(brokers[0]), GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: commits},
		})
		if err == nil {
			for _, p := range resp.Topics[topic] {
				if p.Error != nil {
					err = p.Error
				}
			}
		}
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("reset offsets: %v", err)
}

// TestExactlyOnce: every record written three times, 20 % of handler calls
// failing and some panicking, two group members (rebalances), one member
// stopped mid-batch and restarted, and finally the whole topic consumed
// again from offset 0 by the same group — one row per message, and the
// replay does not run the handler at all.
func TestExactlyOnce(t *testing.T) {
	for _, sc := range testsink.Stores() {
		t.Run(sc.Name, func(t *testing.T) {
			brokers := testenv.KafkaBrokers(t)
			topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
			sink := testsink.New(t, testsink.Pool(t))
			store := sc.New(t)
			chaos := &testsink.Chaos{FailRate: 0.2, PanicRate: 0.05, Seed: t.Name()}
			act, seen := &testsink.Activity{}, &counter{}
			h := act.Wrap(seen.wrap(chain(t, store, group, chaos.Wrap(sink))))
			const n = 60
			var msgs []kafkago.Message
			for i := range n {
				msgs = append(msgs, idMessage(fmt.Sprintf("key-%d", i%7), uuid.New(), fmt.Sprint(i)))
			}
			w := writer(t, brokers, topic)
			for range 3 {
				write(t, w, msgs...)
			}
			rc := readerConfig(brokers, topic, group)
			opts := []consumer.Option{kafkasub.WithPartitionParallelism(3), consumer.WithMaxAttempts(100)}
			a := start(t, newConsumer(t, rc, h, opts...))
			b := start(t, newConsumer(t, rc, h, opts...))
			waitRows(t, sink, n/3)
			a.Stop(t) // mid-batch; its partitions move to b
			waitRows(t, sink, n/2)
			a = start(t, newConsumer(t, rc, h, opts...))
			sink.WaitCount(t, n, 60*time.Second)
			waitSeen(t, seen, 3*n)
			act.WaitQuiet(t, 500*time.Millisecond, 30*time.Second)
			a.Stop(t)
			b.Stop(t)
			if sink.Dups() != 0 {
				t.Fatalf("%d duplicate effects", sink.Dups())
			}
			failed, panicked := chaos.Injected()
			if failed == 0 || panicked == 0 {
				t.Fatalf("chaos injected %d failures and %d panics", failed, panicked)
			}

			// Replay the whole topic with the same group.
			calls := sink.Calls()
			resetOffsets(t, brokers, topic, group, 3)
			seen.n.Store(0)
			r := start(t, newConsumer(t, rc, h, opts...))
			waitSeen(t, seen, 3*n)
			r.Stop(t)
			if got := sink.Calls(); got != calls {
				t.Fatalf("replay ran the handler %d times", got-calls)
			}
			if sink.Count(t) != n || sink.Dups() != 0 {
				t.Fatalf("after replay: %d rows, %d duplicate effects", sink.Count(t), sink.Dups())
			}
		})
	}
}

func waitRows(t *testing.T, s *testsink.Sink, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Count(t) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d rows after 30s", atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitSeen(t *testing.T, c *counter, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.n.Load() < int64(atLeast) {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries after 30s, want at least %d", c.n.Load(), atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOrderWithinPartition: records of one key are handled in order even
// though some attempts fail: a failing record is retried in place.
func TestOrderWithinPartition(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	const n = 30
	var msgs []kafkago.Message
	for i := range n {
		msgs = append(msgs, idMessage("same-key", uuid.New(), strconv.Itoa(i)))
	}
	write(t, writer(t, brokers, topic), msgs...)
	var (
		mu    sync.Mutex
		order []int
		calls int
	)
	h := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%4 == 0 {
			return errors.New("transient")
		}
		i, _ := strconv.Atoi(string(m.Body))
		order = append(order, i)
		return nil
	})
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), chain(t, testsink.Memory(t), group, h)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := len(order) >= n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(order) != n {
		t.Fatalf("handled %d of %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("order %v", order)
		}
	}
}

// TestInFlightClaim: two members get the same record at once (as after a
// rebalance). The second finds the claim in flight, neither commits past
// it nor handles what follows it, and treats it as a duplicate once the
// first completes.
func TestInFlightClaim(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	sink := testsink.New(t, testsink.Pool(t))
	store := testsink.Redis(t)
	first, second := uuid.New(), uuid.New()
	write(t, writer(t, brokers, topic), idMessage("k", first, "1"), idMessage("k", second, "2"))

	holding, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.ID == first {
			once.Do(func() { close(holding) })
			<-release
		}
		return sink.Handle(ctx, m)
	})
	var bCalls atomic.Int64
	fastH := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		bCalls.Add(1)
		return sink.Handle(ctx, m)
	})
	const scope = "shared-scope" // both members are the same logical consumer
	a := start(t, newConsumer(t, readerConfig(brokers, topic, testenv.Name(t, "ga")), chain(t, store, scope, slow)))
	<-holding
	b := start(t, newConsumer(t, readerConfig(brokers, topic, testenv.Name(t, "gb")), chain(t, store, scope, fastH)))
	time.Sleep(700 * time.Millisecond)
	if bCalls.Load() != 0 || sink.Count(t) != 0 {
		t.Fatalf("while the first record was in flight: %d calls on the second member, %d rows", bCalls.Load(), sink.Count(t))
	}
	close(release)
	sink.WaitCount(t, 2, 20*time.Second)
	a.Stop(t)
	b.Stop(t)
	if sink.Dups() != 0 {
		t.Fatalf("%d duplicate effects", sink.Dups())
	}
}

// TestDeadLetter: malformed IDs and a record that always fails end in the
// dead-letter topic with a reason; the records behind them are processed.
func TestDeadLetter(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	sink := testsink.New(t, testsink.Pool(t))
	poison, good := uuid.New(), uuid.New()
	bad := func(body, key, val string) kafkago.Message {
		return kafkago.Message{Key: []byte("k"), Value: []byte(body), Headers: []kafkago.Header{{Key: key, Value: []byte(val)}}}
	}
	write(t, writer(t, brokers, topic),
		bad("malformed", lineage.HeaderMessageID, "not-a-uuid"),
		bad("nil", lineage.HeaderMessageID, uuid.Nil.String()),
		idMessage("k", poison, "poison"),
		idMessage("k", good, "good"),
	)
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.ID == poison {
			return errors.New("always fails")
		}
		return sink.Handle(ctx, m)
	})
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), chain(t, testsink.Memory(t), group, h), consumer.WithMaxAttempts(3)))
	sink.WaitCount(t, 1, 30*time.Second)
	r.Stop(t)
	if !sink.Has(t, good) {
		t.Fatal("the good record was not processed")
	}
	dl := kafkago.NewReader(rawReaderConfig(brokers, topic+consumer.DeadLetterSuffix, testenv.Name(t, "dl")))
	defer dl.Close()
	ctx := testenv.Context(t, 20*time.Second)
	got := map[string]string{}
	for len(got) < 3 {
		m, err := dl.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read dead letters (have %v): %v", got, err)
		}
		hs := map[string]string{}
		for _, h := range m.Headers {
			hs[h.Key] = string(h.Value)
		}
		if hs[consumer.HeaderOriginalTopic] != topic {
			t.Errorf("%s: original topic %q", m.Value, hs[consumer.HeaderOriginalTopic])
		}
		got[string(m.Value)] = hs[consumer.HeaderDeadLetterReason]
	}
	for body, want := range map[string]string{"malformed": "not a UUID", "nil": "nil UUID", "poison": "always fails"} {
		if !strings.Contains(got[body], want) {
			t.Errorf("dead letter of %q: reason %q, want it to mention %q", body, got[body], want)
		}
	}
}

// TestContentIDsFromKcat: records produced by kcat without IDs, each twice,
// are processed once each via content IDs.
func TestContentIDsFromKcat(t *testing.T) {
	kcat := testenv.Tool(t, "kcat")
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	write(t, writer(t, brokers, topic), kafkago.Message{Key: []byte("warmup"), Value: []byte("warmup")}) // creates the topic
	var lines []string
	for round := range 2 {
		_ = round
		for i := range 5 {
			lines = append(lines, fmt.Sprintf("key-%d:kcat message %d", i, i))
		}
	}
	cmd := exec.Command(kcat, "-P", "-b", brokers[0], "-t", topic, "-K:", "-X", "broker.address.family=v4")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	sink := testsink.New(t, testsink.Pool(t))
	seen := &counter{}
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), seen.wrap(chain(t, testsink.Memory(t), group, sink)), kafkasub.WithPartitionParallelism(3)))
	sink.WaitCount(t, 6, 30*time.Second) // 5 distinct kcat messages + warmup
	waitSeen(t, seen, 11)
	r.Stop(t)
	if sink.Count(t) != 6 || sink.Dups() != 0 {
		t.Fatalf("%d rows, %d duplicate effects; want 6 and 0", sink.Count(t), sink.Dups())
	}
}

func TestNewValidates(t *testing.T) {
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	brokers := []string{net.JoinHostPort("127.0.0.1", "9092")}
	for name, tc := range map[string]struct {
		topic, group string
		opts         []consumer.Option
	}{
		"no group":        {"t", "", nil},
		"no topic":        {"", "g", nil},
		"commit interval": {"t", "g", []consumer.Option{kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.CommitInterval = time.Second })}},
		"other group":     {"t", "g", []consumer.Option{kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.GroupID = "x" })}},
		"other brokers":   {"t", "g", []consumer.Option{kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.Brokers = []string{"other:9092"} })}},
		"changed broker":  {"t", "g", []consumer.Option{kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.Brokers[0] = "other:9092" })}},
		"no brokers":      {"t", "g", []consumer.Option{kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.Brokers = nil })}},
		"dl topic, then writer": {"t", "g", []consumer.Option{kafkasub.WithDeadLetterTopic("dl"),
			kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "dl"})}},
		"dl writer, then topic": {"t", "g", []consumer.Option{kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "dl"}),
			kafkasub.WithDeadLetterTopic("dl")}},
		"parallelism":     {"t", "g", []consumer.Option{kafkasub.WithPartitionParallelism(0)}},
		"max batch":       {"t", "g", []consumer.Option{kafkasub.WithMaxBatch(0)}},
		"bad backoff":     {"t", "g", []consumer.Option{consumer.WithBackoff(-1, 0)}},
		"dl writer topic": {"t", "g", []consumer.Option{kafkasub.WithDeadLetterWriter(&kafkago.Writer{})}},
		"foreign option":  {"t", "g", []consumer.Option{consumer.TransportOption("other.WithX", func(*struct{}) error { return nil })}},
	} {
		if _, err := kafkasub.New(brokers, tc.topic, tc.group, h, tc.opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, opts := range map[string][]consumer.Option{
		"defaults":        nil,
		"same brokers":    {kafkasub.WithReaderConfig(func(rc *kafkago.ReaderConfig) { rc.MaxBytes = 1 << 20 })},
		"dl topic twice":  {kafkasub.WithDeadLetterTopic("a"), kafkasub.WithDeadLetterTopic("b")},
		"dl writer twice": {kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "a"}), kafkasub.WithDeadLetterWriter(&kafkago.Writer{Topic: "b"})},
	} {
		if _, err := kafkasub.New(brokers, "t", "g", h, opts...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if brokers[0] != net.JoinHostPort("127.0.0.1", "9092") {
		t.Errorf("New changed the caller's brokers: %v", brokers)
	}
}

// committed returns the group's committed offset per partition (-1: none).
func committed(t *testing.T, brokers []string, topic, group string, partitions int) map[int]int64 {
	t.Helper()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	var parts []int
	for p := range partitions {
		parts = append(parts, p)
	}
	resp, err := client.OffsetFetch(testenv.Context(t, 10*time.Second), &kafkago.OffsetFetchRequest{
		Addr: kafkago.TCP(brokers[0]), GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// TestStoreOutage: while the dedupe store is unreachable nothing is
// committed, dead-lettered or written; when it returns every record is
// processed once.
func TestStoreOutage(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	sink := testsink.New(t, testsink.Pool(t))
	store, proxy := testsink.RedisBehindProxy(t)
	proxy.SetDown(true)
	const n = 12
	var msgs []kafkago.Message
	for i := range n {
		msgs = append(msgs, idMessage(fmt.Sprint("k", i), uuid.New(), "x"))
	}
	write(t, writer(t, brokers, topic), msgs...)
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), chain(t, store, group, sink),
		consumer.WithMaxAttempts(2), kafkasub.WithPartitionParallelism(3)))
	deadline := time.Now().Add(15 * time.Second)
	for proxy.Refused() < 20 && time.Now().Before(deadline) { // well past MaxAttempts
		time.Sleep(10 * time.Millisecond)
	}
	if proxy.Refused() < 20 {
		t.Fatal("the consumer did not try the store")
	}
	for p, off := range committed(t, brokers, topic, group, 3) {
		if off > 0 {
			t.Fatalf("partition %d committed to %d during the outage", p, off)
		}
	}
	if sink.Count(t) != 0 {
		t.Fatal("work done during the store outage")
	}
	proxy.SetDown(false)
	sink.WaitCount(t, n, 20*time.Second)
	r.Stop(t)
	var total int64
	for _, off := range committed(t, brokers, topic, group, 3) {
		total += off
	}
	if total != n || sink.Dups() != 0 {
		t.Fatalf("committed %d of %d records, %d duplicate effects", total, n, sink.Dups())
	}
}

// TestDeadLetterMustSucceedBeforeCommit: when the dead-letter topic cannot be
// written, the failing record is not committed and nothing behind it in its
// partition is handled.
func TestDeadLetterMustSucceedBeforeCommit(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	sink := testsink.New(t, testsink.Pool(t))
	poison, after := uuid.New(), uuid.New()
	write(t, writer(t, brokers, topic), idMessage("k", poison, "poison"), idMessage("k", after, "after"))
	var tried atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.ID == poison {
			tried.Add(1)
			return consumer.Permanent(errors.New("cannot process"))
		}
		return sink.Handle(ctx, m)
	})
	broken := &kafkago.Writer{Addr: kafkago.TCP("127.0.0.1:1"), Topic: "unreachable", MaxAttempts: 1, WriteTimeout: 100 * time.Millisecond}
	defer broken.Close()
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), chain(t, testsink.Memory(t), group, h), kafkasub.WithDeadLetterWriter(broken)))
	deadline := time.Now().Add(15 * time.Second)
	for tried.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if tried.Load() == 0 {
		t.Fatal("the poison record was never handled")
	}
	time.Sleep(500 * time.Millisecond) // several failed dead-letter writes
	r.Stop(t)
	var total int64
	for _, off := range committed(t, brokers, topic, group, 3) {
		if off > 0 {
			total += off
		}
	}
	if total != 0 || sink.Has(t, after) {
		t.Fatalf("committed %d records, record behind the poison handled: %v", total, sink.Has(t, after))
	}
}

// TestGracefulShutdown: Run returns only after the record in progress was
// handled and committed; the records behind it stay uncommitted.
func TestGracefulShutdown(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	sink := testsink.New(t, testsink.Pool(t))
	const n = 4
	var msgs []kafkago.Message
	for i := range n {
		msgs = append(msgs, idMessage("same-key", uuid.New(), strconv.Itoa(i)))
	}
	write(t, writer(t, brokers, topic), msgs...)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		once.Do(func() { close(started) })
		<-release
		return sink.Handle(ctx, m)
	})
	c := newConsumer(t, readerConfig(brokers, topic, group), chain(t, testsink.Memory(t), group, h))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a handler was running", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	var total int64
	for _, off := range committed(t, brokers, topic, group, 3) {
		if off > 0 {
			total += off
		}
	}
	if sink.Count(t) != 1 || total != 1 {
		t.Fatalf("%d rows and %d committed records after shutdown, want 1 and 1", sink.Count(t), total)
	}
}

// TestRebalanceInFlight: one group; member A holds a record of every
// partition (its handler blocks) when member B joins. The rebalance hands B
// at least one of those partitions from the last committed offset, so B
// receives a record A is still handling: B's claim is in flight, B neither
// handles nor commits past it, and once A completes B sees a duplicate.
func TestRebalanceInFlight(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	sink := testsink.New(t, testsink.Pool(t))
	store := testsink.Redis(t)
	w := writer(t, brokers, topic)
	w.Balancer = kafkago.BalancerFunc(func(m kafkago.Message, partitions ...int) int { return int(m.Key[0]-'0') % len(partitions) })
	var msgs []kafkago.Message
	for p := range 3 {
		msgs = append(msgs, idMessage(strconv.Itoa(p), uuid.New(), strconv.Itoa(p)))
	}
	write(t, w, msgs...)

	var holding atomic.Int64
	release := make(chan struct{})
	slow := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		holding.Add(1)
		<-release
		return sink.Handle(ctx, m)
	})
	var bCalls, bInFlight atomic.Int64
	observe := func(next consumer.Handler) consumer.Handler {
		return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			err := next.Handle(ctx, m)
			if errors.Is(err, consumer.ErrInFlight) {
				bInFlight.Add(1)
			}
			return err
		})
	}
	fastH := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		bCalls.Add(1)
		return sink.Handle(ctx, m)
	})
	rc := readerConfig(brokers, topic, group)
	a := start(t, newConsumer(t, rc, chain(t, store, group, slow), kafkasub.WithPartitionParallelism(3)))
	deadline := time.Now().Add(20 * time.Second)
	for holding.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if holding.Load() < 3 {
		t.Fatalf("member A holds %d records, want 3", holding.Load())
	}
	b := start(t, newConsumer(t, rc, observe(chain(t, store, group, fastH)), kafkasub.WithPartitionParallelism(3)))
	deadline = time.Now().Add(20 * time.Second)
	for bInFlight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if bInFlight.Load() == 0 {
		t.Fatal("member B never met A's in-flight claim after the rebalance")
	}
	if bCalls.Load() != 0 || sink.Count(t) != 0 {
		t.Fatalf("while A held the records: %d handler calls on B, %d rows", bCalls.Load(), sink.Count(t))
	}
	close(release)
	sink.WaitCount(t, 3, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // B turns its waits into duplicates
	a.Stop(t)
	b.Stop(t)
	if sink.Dups() != 0 || bCalls.Load() != 0 {
		t.Fatalf("%d duplicate effects, %d records handled twice by B", sink.Dups(), bCalls.Load())
	}
}

// TestLineageHeaders: the ID headers reach the handler's context; a record
// without an ID is dead-lettered under MissingIDDeadLetter and gets the
// configured generator's content ID otherwise.
func TestLineageHeaders(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	g, err := forge.New("tests.example")
	if err != nil {
		t.Fatal(err)
	}
	id, corr, cause := uuid.New(), uuid.New(), uuid.New()
	noID := kafkago.Message{Key: []byte("k"), Value: []byte("no id")}
	for _, policy := range []consumer.MissingIDPolicy{consumer.MissingIDDeadLetter, consumer.MissingIDContent} {
		topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
		write(t, writer(t, brokers, topic), noID, kafkago.Message{Key: []byte("k"), Value: []byte("x"), Headers: []kafkago.Header{
			{Key: lineage.HeaderMessageID, Value: []byte(id.String())},
			{Key: lineage.HeaderCorrelationID, Value: []byte(corr.String())},
			{Key: lineage.HeaderCausationID, Value: []byte(cause.String())},
			{Key: lineage.HeaderMessageType, Value: []byte("order.created")},
			{Key: "tenant", Value: []byte("7")},
		}})
		var mu sync.Mutex
		seen := map[uuid.UUID]lineage.Lineage{}
		headers := map[uuid.UUID]map[string]string{}
		h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			l, _ := lineage.FromContext(ctx)
			mu.Lock()
			seen[m.ID], headers[m.ID] = l, m.Headers
			mu.Unlock()
			return nil
		})
		r := start(t, newConsumer(t, readerConfig(brokers, topic, group), chain(t, testsink.Memory(t), group, h),
			consumer.WithMissingID(policy), consumer.WithGenerator(g), consumer.WithLogger(slog.New(slog.DiscardHandler))))
		want := 1
		if policy == consumer.MissingIDContent {
			want = 2
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		r.Stop(t)
		mu.Lock()
		if l := seen[id]; l != (lineage.Lineage{MessageID: id, CorrelationID: corr, CausationID: cause, Type: "order.created"}) || headers[id]["tenant"] != "7" {
			t.Fatalf("%v: lineage %+v, headers %v", policy, l, headers[id])
		}
		contentID, _ := consumer.ContentID(g, "", noID.Key, noID.Value)
		_, gotContent := seen[contentID]
		mu.Unlock()
		if gotContent != (policy == consumer.MissingIDContent) || len(seen) != want {
			t.Fatalf("%v: handled %d records, content ID %s handled: %v", policy, len(seen), contentID, gotContent)
		}
		if policy == consumer.MissingIDDeadLetter {
			dl := kafkago.NewReader(rawReaderConfig(brokers, topic+consumer.DeadLetterSuffix, testenv.Name(t, "dl")))
			m, err := dl.FetchMessage(testenv.Context(t, 20*time.Second))
			_ = dl.Close()
			if err != nil || string(m.Value) != "no id" {
				t.Fatalf("dead letter: %q, %v", m.Value, err)
			}
		}
	}
}
