package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// faults decides, per message ID and attempt, the failures injected into a
// relay's publisher: roughly one message in failEvery is not sent at its
// first attempt and one in loseEvery is sent but reported failed (a lost
// confirm, so it is published again).
type faults struct {
	failEvery, loseEvery uint32
	mu                   sync.Mutex
	tried                map[uuid.UUID]int
	failed, lost         atomic.Int64
}

func (f *faults) hash(id uuid.UUID) uint32 {
	h := fnv.New32a()
	h.Write(id[:])
	return h.Sum32()
}

func (f *faults) attempt(id uuid.UUID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tried == nil {
		f.tried = map[uuid.UUID]int{}
	}
	f.tried[id]++
	return f.tried[id]
}

func (f *faults) wrap(p publisher.Publisher) publisher.Publisher {
	return &faulty{Publisher: p,
		fail: func(m publisher.Message) error {
			if f.failEvery > 0 && f.hash(m.ID)%f.failEvery == 0 && f.attempt(m.ID) == 1 {
				f.failed.Add(1)
				return errors.New("injected failure")
			}
			return nil
		},
		lose: func(m publisher.Message) bool {
			if f.loseEvery > 0 && (f.hash(m.ID)/7)%f.loseEvery == 0 && f.attempt(m.ID) <= 2 && f.hash(m.ID)%f.failEvery != 0 {
				f.lost.Add(1)
				return true
			}
			return false
		},
	}
}

// orderedLoad enqueues perKey messages for each of keys keys from several
// goroutines while relays run — each key's messages one after another, in
// small transactions mixing keys — and returns the messages by key.
func orderedLoad(t *testing.T, enqueueTx func(msgs []publisher.Message), keys, perKey int) map[string][]publisher.Message {
	t.Helper()
	byKey := map[string][]publisher.Message{}
	for k := range keys {
		key := fmt.Sprintf("K%02d", k)
		for i := range perKey {
			byKey[key] = append(byKey[key], publisher.Message{Type: fmt.Sprintf("step.%03d", i), Key: []any{key}, Body: []byte(fmt.Sprintf("%s/%03d", key, i))})
		}
	}
	const writers = 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var mine []string
			for k := w; k < keys; k += writers {
				mine = append(mine, fmt.Sprintf("K%02d", k))
			}
			for i := 0; i < perKey; i += 2 {
				var tx []publisher.Message
				for _, key := range mine {
					for j := i; j < min(i+2, perKey); j++ {
						tx = append(tx, byKey[key][j])
					}
				}
				enqueueTx(tx)
			}
		})
	}
	wg.Wait()
	return byKey
}

// checkOrder checks that in bodies (as received, duplicates included) the
// first copy of each key's messages comes in enqueue order, and that every
// message arrived.
func checkOrder(t *testing.T, bodies []string, keys, perKey int) {
	t.Helper()
	next := map[string]int{}
	seen := map[string]bool{}
	dups := 0
	for _, b := range bodies {
		if seen[b] {
			dups++
			continue
		}
		seen[b] = true
		key, idx, _ := strings.Cut(b, "/")
		i, err := strconv.Atoi(idx)
		if err != nil {
			t.Fatalf("body %q", b)
		}
		if i != next[key] {
			t.Errorf("key %s: message %d arrived first where %d was due", key, i, next[key])
		}
		next[key] = i + 1
	}
	if len(seen) != keys*perKey {
		t.Errorf("%d distinct messages, want %d", len(seen), keys*perKey)
	}
	t.Logf("%d messages received, %d distinct, %d duplicates", len(bodies), len(seen), dups)
}

// TestOrderSeveralRelays: three relays (each with its own connections, as
// three processes would have) publish one table's messages under load with
// injected failures and lost confirms; the first copy of each key's
// messages reaches the broker in enqueue order, on RabbitMQ and on Kafka.
func TestOrderSeveralRelays(t *testing.T) {
	const keys, perKey = 12, 30
	for _, transport := range []string{"rabbitmq", "kafka"} {
		t.Run(transport, func(t *testing.T) {
			pool := newPool(t)
			s := newStore(t, pool)
			p := newPublisher(t, s, "d")
			f := &faults{failEvery: 9, loseEvery: 11}
			var rb *rabbit
			var k *kafka
			var ds <-chan amqp.Delivery
			if transport == "rabbitmq" {
				rb = newRabbit(t)
				ds = rb.consume(t)
			} else {
				k = newKafka(t)
			}
			for range 3 {
				var pub publisher.Publisher
				if rb != nil {
					pub = rb.publisher(t)
				} else {
					pub = k.publisher(t)
				}
				runRelay(t, sameStore(t, s), map[string]publisher.Publisher{"d": f.wrap(pub)},
					outbox.WithBatchSize(16), outbox.WithWorkers(2))
			}
			orderedLoad(t, func(msgs []publisher.Message) { enqueue(t, pool, p, msgs...) }, keys, perKey)
			var bodies []string
			if rb != nil {
				distinct := map[string]bool{}
				timeout := time.After(90 * time.Second)
				for len(distinct) < keys*perKey {
					select {
					case d := <-ds:
						bodies = append(bodies, string(d.Body))
						distinct[string(d.Body)] = true
					case <-timeout:
						t.Fatalf("received %d of %d messages", len(distinct), keys*perKey)
					}
				}
			} else {
				recs := k.readUntil(t, 90*time.Second, func(recs []kafkago.Message) bool {
					distinct := map[string]bool{}
					for _, r := range recs {
						distinct[string(r.Value)] = true
					}
					return len(distinct) >= keys*perKey
				})
				for _, r := range recs {
					bodies = append(bodies, string(r.Value))
				}
			}
			checkOrder(t, bodies, keys, perKey)
			if f.failed.Load() == 0 || f.lost.Load() == 0 {
				t.Errorf("faults injected: %d failures, %d lost confirms; want some of each", f.failed.Load(), f.lost.Load())
			}
			waitFor(t, 20*time.Second, "every row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == keys*perKey })
		})
	}
}

// TestThreeRelaysEffectsOnce: three relays on one table under load, with
// lost confirms making them publish some messages twice: every message is
// published, and a consumer with the PostgreSQL inbox applies each effect
// once.
func TestThreeRelaysEffectsOnce(t *testing.T) {
	const n = 1200
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	p := newPublisher(t, s, "orders")
	f := &faults{failEvery: 13, loseEvery: 7}
	for range 3 {
		runRelay(t, sameStore(t, s), map[string]publisher.Publisher{"orders": f.wrap(rb.publisher(t))}, outbox.WithBatchSize(50))
	}
	ctx := testenv.Context(t, 120*time.Second)
	inbox := newInbox(t)
	effects := testenv.Name(t, "effects")
	if _, err := pool.Exec(ctx, "CREATE TABLE "+effects+" (message_id uuid NOT NULL, body text NOT NULL)"); err != nil { // no unique constraint: a second effect shows
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, effects) })
	var handled atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		tx, ok := pgstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no inbox transaction")
		}
		handled.Add(1)
		_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (message_id, body) VALUES ($1, $2)", m.ID, string(m.Body))
		return err
	})
	c, err := rabbitsub.New(rb.url, rb.queue, h, consumer.WithDedupe(inbox, "effects"), consumer.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopConsumer := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() { consumed <- c.Run(cctx) }()
	t.Cleanup(func() {
		stopConsumer()
		<-consumed
		deleteQueue(t, rb, rb.queue+consumer.DeadLetterSuffix)
	})

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 * 5 {
				var msgs []publisher.Message
				for j := i; j < min(i+4*5, n); j += 4 {
					msgs = append(msgs, publisher.Message{Type: "order.placed", Key: []any{fmt.Sprintf("SO-%05d", j)}, Body: []byte(fmt.Sprint(j))})
				}
				enqueue(t, pool, p, msgs...)
			}
		})
	}
	wg.Wait()
	var rows, distinct int
	waitFor(t, 90*time.Second, "every effect", func() bool {
		if err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT message_id) FROM "+effects).Scan(&rows, &distinct); err != nil {
			t.Fatal(err)
		}
		return distinct == n && countRows(t, pool, s, outbox.Dispatched) == n
	})
	time.Sleep(500 * time.Millisecond) // let duplicates still in the queue arrive
	if err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT message_id) FROM "+effects).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n {
		t.Fatalf("%d effects of %d distinct messages, want %d of %d", rows, distinct, n, n)
	}
	if f.lost.Load() == 0 {
		t.Error("no confirm was lost: the test did not publish duplicates")
	}
	t.Logf("%d effects; %d injected failures, %d lost confirms (messages published again)", rows, f.failed.Load(), f.lost.Load())
}

// TestInboxHandler: a handler under the consumer's dedupe with the
// PostgreSQL inbox publishes through a publisher.Publisher that is the
// outbox: a handler that then fails sends nothing; one that succeeds sends
// exactly one message, derived from the handled one, however often the
// message is delivered.
func TestInboxHandler(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	ds := rb.consume(t)
	runRelay(t, s, map[string]publisher.Publisher{"billing": rb.publisher(t)})
	var out publisher.Publisher = newPublisher(t, s, "billing") // the only line that differs from direct publishing
	fail := errors.New("handler failed after publishing")
	var failing atomic.Bool
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if err := out.Publish(ctx, publisher.Message{Type: "invoice.issued", Key: []any{string(m.Key)}, Body: m.Body}); err != nil {
			return err
		}
		if failing.Load() {
			return fail
		}
		return nil
	}), consumer.WithDedupe(newInbox(t), "billing"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 60*time.Second)
	in := &consumer.Message{ID: uuid.New(), CorrelationID: uuid.New(), Type: "order.placed", Key: []byte("SO-1"), Body: []byte("12.00"), Attempt: 1}

	failing.Store(true)
	if err := h.Handle(ctx, in); !errors.Is(err, fail) {
		t.Fatalf("Handle = %v, want the handler's failure", err)
	}
	quiet(t, ds, 500*time.Millisecond)
	if n := countRows(t, pool, s, ""); n != 0 {
		t.Fatalf("%d outbox rows after a failed handler, want 0", n)
	}

	failing.Store(false)
	for range 3 { // the first delivery, then two redeliveries
		if err := h.Handle(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	got := collect(t, ds, 1, 30*time.Second)[0]
	quiet(t, ds, 500*time.Millisecond)
	want, _ := publisher.IDs(lineage.NewContext(ctx, lineage.Lineage{MessageID: in.ID, CorrelationID: in.CorrelationID}), gen,
		&publisher.Message{Type: "invoice.issued", Key: []any{"SO-1"}})
	if got.MessageId != want.MessageID.String() || got.CorrelationId != in.CorrelationID.String() ||
		got.Headers[lineage.HeaderCausationID] != in.ID.String() {
		t.Fatalf("received %s corr %s causation %v; want %s corr %s causation %s",
			got.MessageId, got.CorrelationId, got.Headers[lineage.HeaderCausationID], want.MessageID, in.CorrelationID, in.ID)
	}
}

// newInbox returns a PostgreSQL inbox on a table of its own.
func newInbox(t testing.TB) *pgstore.Store {
	t.Helper()
	table := testenv.Name(t, "inbox")
	st, err := pgstore.New(newPool(t), pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.Close()
		testenv.DropTables(t, st.Table())
	})
	return st
}

func deleteQueue(t testing.TB, rb *rabbit, name string) {
	_, _ = rb.ch.QueueDelete(name, false, false, false)
}
