package kafkapub_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// moveLeaders moves the leader of every partition of topic to the next of
// the n brokers, every interval, until ctx ends; it returns the number of
// moves.
func moveLeaders(t *testing.T, ctx context.Context, k *kafkatest.Broker, topic string, partitions, n int, interval time.Duration) int {
	t.Helper()
	moves := 0
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			return moves
		case <-time.After(interval):
		}
		for p := range partitions {
			if err := k.MoveLeader(topic, p, (p+round)%n); err != nil {
				t.Errorf("move leader: %v", err)
				return moves
			}
			moves++
		}
	}
}

// topicIDs reads every record of topic (partitions 0..partitions-1) and
// counts the records of each message ID.
func topicIDs(t *testing.T, ctx context.Context, brokers []string, topic string, partitions int) map[uuid.UUID]int {
	t.Helper()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	req := map[string][]kafkago.OffsetRequest{}
	for p := range partitions {
		req[topic] = append(req[topic], kafkago.LastOffsetOf(p))
	}
	offs, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: req})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uuid.UUID]int{}
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		if po.LastOffset == 0 {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: po.Partition, MaxWait: 50 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, po.Partition, err)
			}
			for _, h := range m.Headers {
				if h.Key == lineage.HeaderMessageID {
					id, err := uuid.Parse(string(h.Value))
					if err != nil {
						t.Fatalf("record %s/%d@%d: message-id %q", topic, m.Partition, m.Offset, h.Value)
					}
					ids[id]++
				}
			}
			if m.Offset == po.LastOffset-1 {
				break
			}
		}
		r.Close()
	}
	return ids
}

// TestLeaderMoves publishes from four goroutines (Publish and PublishBatch)
// to a 3-partition topic of an in-process cluster of three brokers while the
// leaders of all partitions move from broker to broker every 250 ms: with
// acks=all, every message whose Publish returned nil is in the topic
// (retried writes may be there twice, with the same ID).
func TestLeaderMoves(t *testing.T) {
	k := kafkatest.Start(t, kafkatest.WithBrokers(3))
	ctx := testenv.Context(t, 2*time.Minute)
	topic := testenv.Name(t, "topic")
	const partitions = 3
	if err := k.CreateTopic(ctx, topic, partitions); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, k.Brokers(), topic)
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		confirmed []uuid.UUID
		failed    []error
		slowest   time.Duration
		published atomic.Int64
	)
	note := func(ids []uuid.UUID, err error, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, err)
			return
		}
		confirmed = append(confirmed, ids...)
		slowest = max(slowest, took)
		published.Add(int64(len(ids)))
	}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; pctx.Err() == nil; i++ {
				start := time.Now()
				if g%2 == 0 {
					m := publisher.Message{Type: "order.created", Key: []any{g, i}, ID: uuid.New()}
					note([]uuid.UUID{m.ID}, p.Publish(ctx, m), time.Since(start))
				} else {
					msgs := make([]publisher.Message, 8)
					ids := make([]uuid.UUID, len(msgs))
					for j := range msgs {
						msgs[j] = publisher.Message{Type: "order.created", Key: []any{g, i, j}, ID: uuid.New()}
						ids[j] = msgs[j].ID
					}
					note(ids, p.PublishBatch(ctx, msgs...), time.Since(start))
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	mctx, stopMoving := context.WithTimeout(ctx, 3*time.Second)
	defer stopMoving()
	moves := moveLeaders(t, mctx, k, topic, partitions, 3, 250*time.Millisecond)
	p0 := published.Load()
	deadline := time.Now().Add(30 * time.Second)
	for published.Load() < p0+100 && time.Now().Before(deadline) { // publishing goes on after the last move
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(failed), failed[0])
	}
	ids := topicIDs(t, ctx, k.Brokers(), topic, partitions)
	twice := 0
	for _, id := range confirmed {
		switch ids[id] {
		case 0:
			t.Errorf("message %s: Publish returned nil, not in the topic", id)
		case 1:
		default:
			twice++
		}
	}
	t.Logf("%d leader moves; %d messages confirmed, all in the topic (%d records), %d of them twice; %d retried writes; slowest call %v",
		moves, len(confirmed), sum(ids), twice, kafkapub.Retries(p), slowest.Round(time.Millisecond))
}

func sum(m map[uuid.UUID]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
