package kafkasub_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// leaderEffects counts the handler's effects per message ID.
type leaderEffects struct {
	mu    sync.Mutex
	n     map[uuid.UUID]int
	calls atomic.Int64
}

func (e *leaderEffects) handle(_ context.Context, m *consumer.Message) error {
	e.calls.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[uuid.UUID]int{}
	}
	e.n[m.ID]++
	return nil
}

func (e *leaderEffects) get(id uuid.UUID) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[id]
}

func (e *leaderEffects) distinct() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.n)
}

// countDups counts the claims a store answers duplicate.
type countDups struct {
	dedupe.Store
	n atomic.Int64
}

func (d *countDups) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	c, err := d.Store.Claim(ctx, k, lease)
	if err == nil && c.Status == dedupe.Duplicate {
		d.n.Add(1)
	}
	return c, err
}

// TestLeaderMoves consumes a 3-partition topic of an in-process cluster of
// three brokers with two group members sharing a dedupe store, while a
// kafkapub publisher writes to it and the leaders of all partitions move
// from broker to broker every 250 ms: every record the publisher had
// confirmed is handled, each message ID has exactly one effect, and the
// group's committed offsets reach the end of every partition.
func TestLeaderMoves(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithBrokers(3))
	ctx := testenv.Context(t, 2*time.Minute)
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	const partitions = 3
	if err := k.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	pub, err := kafkapub.New(k.Brokers(), topic, forge.MustNew("orders.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	mem, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	store := &countDups{Store: mem}
	var eff leaderEffects
	opts := []consumer.Option{consumer.WithDedupe(store, group), kafkasub.WithPartitionParallelism(partitions),
		consumer.WithBackoff(5*time.Millisecond, 100*time.Millisecond), consumer.WithShutdownTimeout(10 * time.Second),
		consumer.WithLogger(slog.New(slog.DiscardHandler))}
	var members []*running
	for range 2 {
		c, err := kafkasub.New(k.Brokers(), topic, group, consumer.HandlerFunc(eff.handle), opts...)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, start(t, c))
	}

	var (
		mu        sync.Mutex
		confirmed []uuid.UUID
		failed    []error
		published atomic.Int64
	)
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := 0; pctx.Err() == nil; i++ {
				m := publisher.Message{Type: "order.created", Key: []any{g, i}, ID: uuid.New()}
				err := pub.Publish(ctx, m)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					confirmed = append(confirmed, m.ID)
				}
				mu.Unlock()
				published.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	waitFor(t, 30*time.Second, "consumption before the leaders move", func() bool { return eff.calls.Load() >= 100 })
	moves, before := 0, eff.calls.Load()
	for round := 1; round <= 12; round++ {
		time.Sleep(250 * time.Millisecond)
		for p := range partitions {
			if err := k.MoveLeader(topic, p, (p+round)%3); err != nil {
				t.Fatal(err)
			}
			moves++
		}
	}
	during := eff.calls.Load() - before
	p0 := published.Load()
	waitFor(t, 30*time.Second, "publishing after the last move", func() bool { return published.Load() >= p0+100 })
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(failed), failed[0])
	}
	waitFor(t, time.Minute, "every confirmed message handled", func() bool { return eff.distinct() >= len(confirmed) })
	size, err := k.TopicSize(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	// The group commits up to the end of every partition.
	end := map[int]int64{}
	waitFor(t, time.Minute, "offsets committed to the end of the topic", func() bool {
		got, err := k.Committed(ctx, group, topic)
		if err != nil {
			return false
		}
		var n int64
		for _, o := range got {
			n += o
		}
		end = got
		return n == int64(size)
	})
	for _, r := range members {
		r.Stop(t)
	}
	twice := 0
	for _, id := range confirmed {
		switch eff.get(id) {
		case 0:
			t.Errorf("message %s: confirmed, never handled", id)
		case 1:
		default:
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d messages had more than one effect", twice)
	}
	if d := eff.distinct(); d != len(confirmed) {
		t.Errorf("%d distinct messages handled, %d confirmed", d, len(confirmed))
	}
	t.Logf("%d leader moves (%d handler runs meanwhile); %d messages confirmed, %d records in the topic, %d handler runs, %d deliveries answered duplicate; committed %v",
		moves, during, len(confirmed), size, eff.calls.Load(), store.n.Load(), end)
	if during == 0 {
		t.Errorf("nothing was handled while the leaders moved")
	}
}
