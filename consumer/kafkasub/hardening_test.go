package kafkasub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
)

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// lines returns the log lines at level that contain all of words.
func (l *logBuffer) lines(level string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if !strings.Contains(line, "level="+level) {
			continue
		}
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// handled records which message IDs a handler processed.
type handled struct {
	mu  sync.Mutex
	ids map[uuid.UUID]int
}

func (h *handled) add(id uuid.UUID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids == nil {
		h.ids = map[uuid.UUID]int{}
	}
	h.ids[id]++
}

func (h *handled) has(id uuid.UUID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ids[id] > 0
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAll reads every record of topic from the start.
func readAll(t *testing.T, brokers []string, topic string, want int) []kafkago.Message {
	t.Helper()
	r := kafkago.NewReader(rawReaderConfig(brokers, topic, testenv.Name(t, "reader")))
	defer r.Close()
	ctx := testenv.Context(t, 20*time.Second)
	var out []kafkago.Message
	for len(out) < want {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %s (have %d of %d): %v", topic, len(out), want, err)
		}
		out = append(out, m)
	}
	return out
}

func headers(m kafkago.Message) map[string]string {
	hs := map[string]string{}
	for _, h := range m.Headers {
		hs[h.Key] = string(h.Value)
	}
	return hs
}

// TestDeadLetterOfLargeRecord: records close to the broker's size limit
// (1 048 588 bytes per batch by default) that the broker accepted must
// still reach the dead-letter topic, although the dead-letter headers make
// them larger: compressed when that is enough, otherwise as a reference
// dead letter that names the original and keeps its headers and the
// reason. The records behind them are then processed, and the failed
// first write is logged at ERROR.
func TestDeadLetterOfLargeRecord(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	noise := make([]byte, 1_048_400)
	rand.Read(noise)
	quoted := make([]byte, 1_046_000)
	rand.Read(quoted)
	quotedID, compressibleID, good := uuid.New(), uuid.New(), uuid.New()
	w := writer(t, brokers, topic)
	w.BatchBytes = 4 << 20
	write(t, w,
		// A malformed ID: dead-lettered before any handler runs.
		kafkago.Message{Key: []byte("k"), Value: noise, Headers: []kafkago.Header{
			{Key: lineage.HeaderMessageID, Value: []byte("not-a-uuid")}, {Key: "tenant", Value: []byte("7")}}},
	)
	write(t, w, idMessage("k", quotedID, string(quoted)))                       // the handler's error quotes the body
	write(t, w, idMessage("k", compressibleID, strings.Repeat("a", 1_048_300))) // compresses well
	write(t, w, idMessage("k", good, "good"))
	var done handled
	h := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		if m.ID == quotedID || m.ID == compressibleID {
			return consumer.Permanent(fmt.Errorf("cannot parse %q", m.Body))
		}
		done.add(m.ID)
		return nil
	})
	var logs logBuffer
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), h, consumer.WithLogger(logs.logger())))
	waitFor(t, 30*time.Second, "the record behind the large dead letters was not processed", func() bool { return done.has(good) })
	r.Stop(t)

	dls := readAll(t, brokers, topic+consumer.DeadLetterSuffix, 3)
	byOffset := map[string]kafkago.Message{}
	for _, m := range dls {
		hs := headers(m)
		if hs[consumer.HeaderOriginalTopic] != topic || hs[consumer.HeaderOriginalPartition] == "" {
			t.Errorf("dead letter %v: original not named", hs)
		}
		byOffset[hs[consumer.HeaderOriginalOffset]] = m
	}
	ref := byOffset["0"]
	if hs := headers(ref); len(ref.Value) != 0 || hs[consumer.HeaderDeadLetterOmitted] != "body" ||
		hs[lineage.HeaderMessageID] != "not-a-uuid" || hs["tenant"] != "7" || !strings.Contains(hs[consumer.HeaderDeadLetterReason], "not a UUID") {
		t.Errorf("dead letter of the malformed record: %d-byte value, headers %v; want a reference keeping headers and reason", len(ref.Value), hs)
	}
	q := byOffset["1"]
	if hs := headers(q); len(q.Value) != 0 || hs[consumer.HeaderDeadLetterOmitted] != "body" || hs[lineage.HeaderMessageID] != quotedID.String() ||
		len(hs[consumer.HeaderDeadLetterReason]) > consumer.MaxReasonBytes || !strings.Contains(hs[consumer.HeaderDeadLetterReason], "cannot parse") {
		t.Errorf("dead letter of the record quoted by its error: %d-byte value, %d-byte reason, omitted %q",
			len(q.Value), len(hs[consumer.HeaderDeadLetterReason]), hs[consumer.HeaderDeadLetterOmitted])
	}
	c := byOffset["2"]
	if hs := headers(c); len(c.Value) != 1_048_300 || hs[consumer.HeaderDeadLetterOmitted] != "" {
		t.Errorf("dead letter of the compressible record: %d-byte value, omitted %q; want the whole record", len(c.Value), hs[consumer.HeaderDeadLetterOmitted])
	}
	if lines := logs.lines("ERROR", "dead letter"); len(lines) == 0 {
		t.Errorf("no ERROR log line about the dead letters; logs:\n%.3000s", logs.String())
	}
}

// TestDeadLetterFailureLoggedAtOnce: a dead-letter write that keeps failing
// is logged at ERROR at its first failure, retried, and the record is not
// committed.
func TestDeadLetterFailureLoggedAtOnce(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	poison := uuid.New()
	write(t, writer(t, brokers, topic), idMessage("k", poison, "poison"))
	var tried atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		tried.Add(1)
		return consumer.Permanent(errors.New("cannot process"))
	})
	broken := &kafkago.Writer{Addr: kafkago.TCP("127.0.0.1:1"), Topic: "unreachable", MaxAttempts: 1, WriteTimeout: 100 * time.Millisecond}
	defer broken.Close()
	var logs logBuffer
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group), h, kafkasub.WithDeadLetterWriter(broken), consumer.WithLogger(logs.logger())))
	waitFor(t, 15*time.Second, "no ERROR log line while the dead letter keeps failing", func() bool {
		return len(logs.lines("ERROR", "dead letter", "offset=0")) > 0
	})
	r.Stop(t)
	if off := committed(t, brokers, topic, group, 3); off[0] > 0 || off[1] > 0 || off[2] > 0 {
		t.Fatalf("committed %v without the dead letter", off)
	}
}

// TestAbandonedRetryNotCommitted: a consumer stopped while a record waits
// between two attempts hands the record back: its offset is not committed,
// and the next member of the group gets it again.
func TestAbandonedRetryNotCommitted(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	id := uuid.New()
	write(t, writer(t, brokers, topic), idMessage("k", id, "x"))
	var failures atomic.Int64
	failing := consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		failures.Add(1)
		return errors.New("not yet")
	})
	c := newConsumer(t, readerConfig(brokers, topic, group), failing,
		consumer.WithMaxAttempts(100), consumer.WithBackoff(time.Second, time.Second))
	r := start(t, c)
	waitFor(t, 20*time.Second, "the handler never ran", func() bool { return failures.Load() > 0 })
	r.Stop(t) // during the 1 s wait before the second attempt
	if n := failures.Load(); n != 1 {
		t.Fatalf("%d attempts, want the stop during the first wait", n)
	}
	for p, off := range committed(t, brokers, topic, group, 3) {
		if off > 0 {
			t.Fatalf("partition %d committed to %d: the abandoned record was committed", p, off)
		}
	}
	var done handled
	ok := consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error { done.add(m.ID); return nil })
	r2 := start(t, newConsumer(t, readerConfig(brokers, topic, group), ok))
	waitFor(t, 20*time.Second, "the abandoned record did not come back", func() bool { return done.has(id) })
	r2.Stop(t)
}

// TestRebalanceNeverMovesOffsetBack: member A holds the first record of
// every partition when member B joins. B gets A's partitions (some or all),
// processes their records, including the ones written after it joined, and
// commits them. When A's handler returns, A must not commit the partitions
// it lost: the committed offsets never move back, and at the end every
// partition is committed to its end.
func TestRebalanceNeverMovesOffsetBack(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	w := writer(t, brokers, topic)
	w.Balancer = kafkago.BalancerFunc(func(m kafkago.Message, partitions ...int) int { return int(m.Key[0]-'0') % len(partitions) })
	writeRound := func(round int) {
		var msgs []kafkago.Message
		for p := range 3 {
			msgs = append(msgs, idMessage(strconv.Itoa(p), uuid.New(), fmt.Sprint(p, "/", round)))
		}
		write(t, w, msgs...)
	}
	writeRound(0)

	var holding atomic.Int64
	release := make(chan struct{})
	var aDone atomic.Int64
	slow := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.Offset == 0 {
			select {
			case <-release:
			default:
				holding.Add(1)
				<-release
			}
		}
		aDone.Add(1)
		return nil
	})
	var bDone atomic.Int64
	fast := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { bDone.Add(1); return nil })
	rc := readerConfig(brokers, topic, group)
	a := start(t, newConsumer(t, rc, slow, kafkasub.WithPartitionParallelism(3)))
	waitFor(t, 20*time.Second, "member A does not hold a record of every partition", func() bool { return holding.Load() == 3 })

	// Watch the committed offsets from now on.
	var (
		mu        sync.Mutex
		high      = map[int]int64{}
		movedBack []string
	)
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			resp, err := client.OffsetFetch(context.Background(), &kafkago.OffsetFetchRequest{
				Addr: kafkago.TCP(brokers[0]), GroupID: group, Topics: map[string][]int{topic: {0, 1, 2}}})
			if err != nil {
				continue
			}
			mu.Lock()
			for _, p := range resp.Topics[topic] {
				if p.CommittedOffset < 0 { // none yet
					continue
				}
				if p.CommittedOffset < high[p.Partition] && len(movedBack) < 10 {
					movedBack = append(movedBack, fmt.Sprintf("partition %d: %d after %d", p.Partition, p.CommittedOffset, high[p.Partition]))
				}
				high[p.Partition] = max(high[p.Partition], p.CommittedOffset)
			}
			mu.Unlock()
		}
	}()

	b := start(t, newConsumer(t, rc, fast, kafkasub.WithPartitionParallelism(3)))
	waitFor(t, 30*time.Second, "member B got no partition", func() bool { return bDone.Load() >= 1 })
	const rounds = 5
	for round := 1; round < rounds; round++ {
		writeRound(round)
	}
	waitFor(t, 30*time.Second, "member B did not process a whole partition", func() bool { return bDone.Load() >= rounds })
	time.Sleep(300 * time.Millisecond) // B commits what it processed
	close(release)
	waitFor(t, 30*time.Second, "member A did not finish its records", func() bool { return aDone.Load() >= 3 })
	time.Sleep(500 * time.Millisecond) // A commits, or is refused
	a.Stop(t)
	b.Stop(t)
	close(stopWatch)
	<-watchDone
	final := committed(t, brokers, topic, group, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(movedBack) > 0 {
		t.Errorf("committed offsets moved back: %v", movedBack)
	}
	for p := range 3 {
		if final[p] != rounds {
			t.Errorf("partition %d committed to %d at the end, want %d (final %v)", p, final[p], rounds, final)
		}
	}
}

// TestPing: Ping succeeds on an existing topic, names a missing one and an
// unreachable cluster.
func TestPing(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	write(t, writer(t, brokers, topic), idMessage("k", uuid.New(), "x"))
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	ctx := testenv.Context(t, 20*time.Second)
	c, err := kafkasub.New(brokers, topic, "g", h)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping of an existing topic: %v", err)
	}
	missing, err := kafkasub.New(brokers, testenv.Name(t, "missing"), "g", h)
	if err != nil {
		t.Fatal(err)
	}
	if err := missing.Ping(ctx); !errors.Is(err, kafkasub.ErrUnknownTopic) {
		t.Fatalf("Ping of a missing topic = %v, want ErrUnknownTopic", err)
	}
	l := testenv.InProcessKafka(t)
	addr := l.Brokers()[0]
	l.Close()
	dead, err := kafkasub.New([]string{addr}, topic, "g", h)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := dead.Ping(short); err == nil || !strings.Contains(err.Error(), addr) || !strings.HasPrefix(err.Error(), "kafkasub: ") {
		t.Fatalf("Ping of an unreachable cluster = %v, want an error naming %s", err, addr)
	}
}
