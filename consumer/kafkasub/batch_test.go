package kafkasub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// event is one entry of a ledger.
type event struct {
	kind      string // "ok" or "fail" (a handler call), "complete" (stored), "commit"
	partition int
	offset    int64 // the record's; for "commit" the offset committed
	committed int64 // handler calls: the group's committed offset when it ran
}

// ledger is one ordered log of what happened to the records of a test:
// handler calls with the committed offset they saw, completions the store
// accepted, and commits (just before they are sent).
type ledger struct {
	brokers      []string
	topic, group string

	mu      sync.Mutex
	events  []event
	offsets map[uuid.UUID][2]int64 // message ID -> partition, offset
}

func newLedger(brokers []string, topic, group string) *ledger {
	return &ledger{brokers: brokers, topic: topic, group: group, offsets: map[uuid.UUID][2]int64{}}
}

func (l *ledger) add(e event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *ledger) snapshot() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// partition returns the partition of the record with message ID id.
func (l *ledger) partition(id uuid.UUID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.offsets[id][0])
}

// commit is the consumer's commit hook.
func (l *ledger) commit(partition int, offset int64) {
	l.add(event{kind: "commit", partition: partition, offset: offset})
}

// completed logs a completion the store accepted.
func (l *ledger) completed(id uuid.UUID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	po, ok := l.offsets[id]
	if !ok {
		po = [2]int64{-1, -1}
	}
	l.events = append(l.events, event{kind: "complete", partition: int(po[0]), offset: po[1]})
}

// committedNow asks the broker for the group's committed offset of
// partition (-1: none).
func (l *ledger) committedNow(ctx context.Context, partition int) (int64, error) {
	client := &kafkago.Client{Addr: kafkago.TCP(l.brokers...), Transport: &kafkago.Transport{}}
	resp, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{
		Addr: kafkago.TCP(l.brokers[0]), GroupID: l.group, Topics: map[string][]int{l.topic: {partition}}})
	if err != nil {
		return 0, err
	}
	for _, p := range resp.Topics[l.topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		return p.CommittedOffset, nil
	}
	return 0, errors.New("no offset in the answer")
}

// handler wraps h: each call is logged with its result and the committed
// offset of its partition at the time.
func (l *ledger) handler(t *testing.T, h consumer.HandlerFunc) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		l.mu.Lock()
		l.offsets[m.ID] = [2]int64{int64(m.Partition), m.Offset}
		l.mu.Unlock()
		c, err := l.committedNow(context.WithoutCancel(ctx), m.Partition)
		if err != nil {
			t.Errorf("committed offset: %v", err)
		}
		herr := h(ctx, m)
		kind := "ok"
		if herr != nil {
			kind = "fail"
		}
		l.add(event{kind: kind, partition: m.Partition, offset: m.Offset, committed: c})
		return herr
	})
}

// checkCommits fails unless every commit of offset c on a partition came
// after the completion of every record of that partition below c, from
// offset first on, except those in settled (dead-lettered), and unless no
// handler ever ran while its own record or a later one was committed.
func (l *ledger) checkCommits(t *testing.T, first int64, settled map[int64]bool) {
	t.Helper()
	done := map[[2]int64]bool{}
	for _, e := range l.snapshot() {
		switch e.kind {
		case "complete":
			done[[2]int64{int64(e.partition), e.offset}] = true
		case "commit":
			for o := first; o < e.offset; o++ {
				if !done[[2]int64{int64(e.partition), o}] && !settled[o] {
					t.Errorf("partition %d committed to %d before offset %d was completed", e.partition, e.offset, o)
				}
			}
		case "ok", "fail":
			if e.committed > e.offset {
				t.Errorf("the handler of offset %d ran with offset %d committed", e.offset, e.committed)
			}
		}
	}
}

// countingStore counts a store's round trips and logs its completions.
type countingStore struct {
	dedupe.BatchStore
	led *ledger

	mu            sync.Mutex
	claims        [][]uuid.UUID // the IDs of each claim round trip
	completeTrips int
	releaseTrips  int
	completions   map[uuid.UUID]int
}

func newCountingStore(s dedupe.Store, led *ledger) *countingStore {
	return &countingStore{BatchStore: s.(dedupe.BatchStore), led: led, completions: map[uuid.UUID]int{}}
}

func (s *countingStore) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	s.mu.Lock()
	s.claims = append(s.claims, []uuid.UUID{k.ID})
	s.mu.Unlock()
	return s.BatchStore.Claim(ctx, k, lease)
}

func (s *countingStore) ClaimBatch(ctx context.Context, ks []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	ids := make([]uuid.UUID, len(ks))
	for i, k := range ks {
		ids[i] = k.ID
	}
	s.mu.Lock()
	s.claims = append(s.claims, ids)
	s.mu.Unlock()
	return s.BatchStore.ClaimBatch(ctx, ks, lease)
}

func (s *countingStore) done(id uuid.UUID) {
	s.mu.Lock()
	s.completions[id]++
	s.mu.Unlock()
	if s.led != nil {
		s.led.completed(id)
	}
}

func (s *countingStore) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	s.mu.Lock()
	s.completeTrips++
	s.mu.Unlock()
	err := s.BatchStore.Complete(ctx, c, retention)
	if err == nil {
		s.done(c.Key.ID)
	}
	return err
}

func (s *countingStore) CompleteBatch(ctx context.Context, cs []dedupe.Claim, retention time.Duration) ([]error, error) {
	s.mu.Lock()
	s.completeTrips++
	s.mu.Unlock()
	errs, err := s.BatchStore.CompleteBatch(ctx, cs, retention)
	if err == nil {
		for i, c := range cs {
			if errs[i] == nil {
				s.done(c.Key.ID)
			}
		}
	}
	return errs, err
}

func (s *countingStore) ReleaseBatch(ctx context.Context, cs []dedupe.Claim) ([]error, error) {
	s.mu.Lock()
	s.releaseTrips++
	s.mu.Unlock()
	return s.BatchStore.ReleaseBatch(ctx, cs)
}

// gated writes a gate record, starts c, and once the gate's handler runs
// writes msgs to the gate's partition (same key) and leaves the partition
// reader a second to fetch them before the gate's handler returns: the
// records then wait together, as a batch. gate must block on release.
func gated(t *testing.T, w *kafkago.Writer, c *kafkasub.Consumer, gate kafkago.Message, running, release chan struct{}, msgs ...kafkago.Message) *running {
	t.Helper()
	write(t, w, gate)
	r := start(t, c)
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the gate record was not handled within 30 s")
	}
	write(t, w, msgs...)
	time.Sleep(time.Second)
	close(release)
	return r
}

func waitCommitted(t *testing.T, led *ledger, partition int, want int64) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("partition %d not committed to %d", partition, want), func() bool {
		c, err := led.committedNow(context.Background(), partition)
		return err == nil && c == want
	})
}

// TestBatchOneClaimAndOneCommit: records waiting together in a partition
// are claimed in one round trip, handled in order, completed in one round
// trip and committed once, after their completions; the handlers saw
// nothing of their batch committed.
func TestBatchOneClaimAndOneCommit(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	led := newLedger(brokers, topic, group)
	store := newCountingStore(testsink.Redis(t), led)
	gate := uuid.New()
	running, release := make(chan struct{}), make(chan struct{})
	var (
		mu    sync.Mutex
		order []string
	)
	h := led.handler(t, func(_ context.Context, m *consumer.Message) error {
		if m.ID == gate {
			close(running)
			<-release
			return nil
		}
		mu.Lock()
		order = append(order, string(m.Body))
		mu.Unlock()
		return nil
	})
	const n = 10
	var msgs []kafkago.Message
	var ids []uuid.UUID
	for i := range n {
		ids = append(ids, uuid.New())
		msgs = append(msgs, idMessage("k", ids[i], strconv.Itoa(i)))
	}
	c := newConsumer(t, readerConfig(brokers, topic, group), h, consumer.WithDedupe(store, group),
		kafkasub.WithCommitHook(led.commit))
	r := gated(t, writer(t, brokers, topic), c, idMessage("k", gate, "gate"), running, release, msgs...)
	partition := led.partition(gate)
	waitCommitted(t, led, partition, n+1)
	r.Stop(t)

	if fmt.Sprint(order) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Errorf("handled in order %v", order)
	}
	store.mu.Lock()
	claims, completes := store.claims, store.completeTrips
	store.mu.Unlock()
	if len(claims) != 2 || !slices.Equal(claims[0], []uuid.UUID{gate}) || !slices.Equal(claims[1], ids) {
		t.Errorf("claim round trips %v, want one for the gate and one for the %d records in order", claims, n)
	}
	if completes != 2 {
		t.Errorf("%d completion round trips, want 2 (the gate, the batch)", completes)
	}
	var commits []int64
	for _, e := range led.snapshot() {
		switch {
		case e.kind == "commit":
			commits = append(commits, e.offset)
		case e.kind == "ok" && e.offset > 0 && e.committed != 1:
			t.Errorf("the handler of offset %d saw offset %d committed, want 1 (the gate's)", e.offset, e.committed)
		}
	}
	if !slices.Equal(commits, []int64{1, n + 1}) {
		t.Errorf("commits %v, want [1 %d]", commits, n+1)
	}
	led.checkCommits(t, 0, nil)
}

// TestBatchFailureInTheMiddle: a record in the middle of a batch fails;
// the records before it take effect once, it is retried in place (or
// dead-lettered), the records after it follow in order, each once, and
// nothing at or after the failing record is committed before it is
// settled.
func TestBatchFailureInTheMiddle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int // -1: permanent
		calls    int
	}{
		{"retried", 2, 3},
		{"dead-lettered", -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers := testenv.KafkaBrokers(t)
			topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
			led := newLedger(brokers, topic, group)
			store := newCountingStore(testsink.Redis(t), led)
			gate := uuid.New()
			running, release := make(chan struct{}), make(chan struct{})
			const n, bad = 10, 4 // the fifth record fails, at offset 5
			var msgs []kafkago.Message
			var ids []uuid.UUID
			for i := range n {
				ids = append(ids, uuid.New())
				msgs = append(msgs, idMessage("k", ids[i], strconv.Itoa(i)))
			}
			var mu sync.Mutex
			calls := map[uuid.UUID]int{}
			var effects []string
			h := led.handler(t, func(_ context.Context, m *consumer.Message) error {
				if m.ID == gate {
					close(running)
					<-release
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				calls[m.ID]++
				if m.ID == ids[bad] {
					if tc.failures < 0 {
						return consumer.Permanent(errors.New("poison"))
					}
					if calls[m.ID] <= tc.failures {
						return errors.New("not yet")
					}
				}
				effects = append(effects, string(m.Body))
				return nil
			})
			c := newConsumer(t, readerConfig(brokers, topic, group), h, consumer.WithDedupe(store, group),
				consumer.WithMaxAttempts(5), kafkasub.WithCommitHook(led.commit))
			r := gated(t, writer(t, brokers, topic), c, idMessage("k", gate, "gate"), running, release, msgs...)
			partition := led.partition(gate)
			waitCommitted(t, led, partition, n+1)
			r.Stop(t)

			want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
			var settled map[int64]bool
			if tc.failures < 0 {
				want = slices.Delete(want, bad, bad+1)
				settled = map[int64]bool{bad + 1: true}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(effects, want) {
				t.Errorf("effects in order %v, want %v", effects, want)
			}
			for i, id := range ids {
				want := 1
				if i == bad {
					want = tc.calls
				}
				if calls[id] != want {
					t.Errorf("record %d handled %d times, want %d", i, calls[id], want)
				}
			}
			led.checkCommits(t, 0, settled)
			for _, e := range led.snapshot() {
				if e.kind == "fail" && e.committed > bad+1 {
					t.Errorf("the failing record ran with offset %d committed", e.committed)
				}
			}
			if tc.failures < 0 {
				dl := readAll(t, brokers, topic+consumer.DeadLetterSuffix, 1)
				if string(dl[0].Value) != strconv.Itoa(bad) {
					t.Errorf("dead letter %q, want %q", dl[0].Value, strconv.Itoa(bad))
				}
			}
		})
	}
}

// TestBatchChaos: records written in bursts to 3 partitions (so that they
// are handled in batches), 10 % of handler calls failing, 3 % panicking,
// some handlers failing after their write, and the consumer stopped with a
// shutdown timeout too short to finish its batches, then started again.
// With the PostgreSQL inbox every effect happens exactly once (a write
// before a failure rolls back); with Redis every message is completed
// exactly once (its effect may repeat after a failure that followed the
// write: that is what an inbox is for). In both, each partition's records
// first take effect in offset order.
func TestBatchChaos(t *testing.T) {
	for _, sc := range []string{"redis", "postgres-inbox"} {
		t.Run(sc, func(t *testing.T) {
			brokers := testenv.KafkaBrokers(t)
			topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
			pool := testsink.Pool(t)
			sink := testsink.New(t, pool)
			var store dedupe.Store
			var counting *countingStore
			if sc == "redis" {
				counting = newCountingStore(testsink.Redis(t), nil)
				store = counting
			} else {
				store = testsink.Postgres(t)
			}
			var mu sync.Mutex
			failedAfter := map[uuid.UUID]bool{}
			sink.FailAfterWrite = func(m *consumer.Message) bool {
				mu.Lock()
				defer mu.Unlock()
				if m.ID[0]%8 != 0 || failedAfter[m.ID] {
					return false
				}
				failedAfter[m.ID] = true
				return true
			}
			first := map[int][]int64{} // partition -> offsets in the order they first took effect
			tookEffect := map[uuid.UUID]bool{}
			record := func(next consumer.Handler) consumer.Handler {
				return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
					err := next.Handle(ctx, m)
					if err == nil {
						mu.Lock()
						if !tookEffect[m.ID] {
							tookEffect[m.ID] = true
							first[m.Partition] = append(first[m.Partition], m.Offset)
						}
						mu.Unlock()
					}
					return err
				})
			}
			chaos := &testsink.Chaos{FailRate: 0.1, PanicRate: 0.03, Seed: t.Name()}
			h := record(chaos.Wrap(sink))
			w := writer(t, brokers, topic)
			const bursts, per = 6, 50
			burst := func() {
				var msgs []kafkago.Message
				for i := range per {
					msgs = append(msgs, idMessage(fmt.Sprint("k", i%9), uuid.New(), "x"))
				}
				write(t, w, msgs...)
			}
			for range bursts / 2 {
				burst()
			}
			opts := []consumer.Option{consumer.WithDedupe(store, group), consumer.WithMaxAttempts(100),
				consumer.WithLease(3 * time.Second), kafkasub.WithPartitionParallelism(3),
				consumer.WithLogger(slog.New(slog.DiscardHandler))}
			a := start(t, newConsumer(t, readerConfig(brokers, topic, group), h,
				append(opts, consumer.WithShutdownTimeout(time.Millisecond))...))
			waitRows(t, sink, per)
			a.Stop(t) // mid-batch: the records in progress are abandoned
			for range bursts / 2 {
				burst()
			}
			b := start(t, newConsumer(t, readerConfig(brokers, topic, group), h, opts...))
			sink.WaitCount(t, bursts*per, 60*time.Second)
			var total int64
			waitFor(t, 30*time.Second, "not every record committed", func() bool {
				total = 0
				for _, off := range committed(t, brokers, topic, group, 3) {
					total += max(off, 0)
				}
				return total == bursts*per
			})
			b.Stop(t)

			failed, panicked := chaos.Injected()
			if failed == 0 || panicked == 0 {
				t.Fatalf("chaos injected %d failures and %d panics", failed, panicked)
			}
			if sink.Count(t) != bursts*per {
				t.Fatalf("%d rows, want %d", sink.Count(t), bursts*per)
			}
			if counting != nil {
				counting.mu.Lock()
				for id, n := range counting.completions {
					if n != 1 {
						t.Errorf("message %s completed %d times", id, n)
					}
				}
				if len(counting.completions) != bursts*per {
					t.Errorf("%d messages completed, want %d", len(counting.completions), bursts*per)
				}
				counting.mu.Unlock()
			} else if sink.Dups() != 0 {
				t.Errorf("%d duplicate effects through the inbox", sink.Dups())
			}
			mu.Lock()
			defer mu.Unlock()
			for p, offs := range first {
				if !slices.IsSorted(offs) {
					t.Errorf("partition %d: records first took effect in the order %v", p, offs)
				}
			}
		})
	}
}

// idObserver records the message ID each delivery had when it began.
type idObserver struct {
	mu  sync.Mutex
	ids []uuid.UUID
}

func (o *idObserver) DeliveryStart(ctx context.Context, m *consumer.Message) context.Context {
	o.mu.Lock()
	o.ids = append(o.ids, m.ID)
	o.mu.Unlock()
	return ctx
}
func (o *idObserver) AttemptDone(context.Context, *consumer.Message, consumer.Attempt)   {}
func (o *idObserver) DeliveryDone(context.Context, *consumer.Message, consumer.Delivery) {}

// TestDeliveryStartKnowsTheIDs: the observer's DeliveryStart sees the
// message's IDs (a tracing observer names its span with them), for records
// with an ID header and for records given a content ID.
func TestDeliveryStartKnowsTheIDs(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	id := uuid.New()
	noID := kafkago.Message{Key: []byte("k"), Value: []byte("no id")}
	write(t, writer(t, brokers, topic), idMessage("k", id, "x"), noID)
	obs := &idObserver{}
	var h handled
	r := start(t, newConsumer(t, readerConfig(brokers, topic, group),
		consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error { h.add(m.ID); return nil }),
		consumer.WithObserver(obs)))
	waitFor(t, 30*time.Second, "records not handled", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.ids) == 2
	})
	r.Stop(t)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(obs.ids) != 2 {
		t.Fatalf("%d deliveries began, want 2", len(obs.ids))
	}
	for _, got := range obs.ids {
		if got == uuid.Nil || h.ids[got] != 1 {
			t.Errorf("DeliveryStart saw message ID %v; handled %v", got, h.ids)
		}
	}
}
