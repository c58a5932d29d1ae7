package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/kafkatest"
)

// kafkaCluster is an in-process Kafka cluster of the run: the message and
// outbox scenarios share a one-node broker, the scale scenario has one of
// three nodes.
type kafkaCluster struct {
	broker     *kafkatest.Broker
	partitions int // of every topic of the cluster
}

// mainKafka is the message and outbox scenarios' broker.
func (e *env) mainKafka() kafkaCluster {
	return kafkaCluster{broker: e.kafka, partitions: partitions}
}

// lag returns how many records of topic the group has not committed, and
// how many records the topic has (offsets start at 0: nothing is deleted
// during a run).
func (k kafkaCluster) lag(ctx context.Context, topic, group string) (lag, total int64, err error) {
	size, err := k.broker.TopicSize(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	committed, err := k.broker.Committed(ctx, group, topic)
	if err != nil {
		return 0, 0, err
	}
	lag = int64(size)
	for _, off := range committed {
		lag -= off
	}
	return lag, int64(size), nil
}

// resetOffsets commits offset 0 on every partition for the (now empty)
// group, so that its next member reads the whole topic again.
func (k kafkaCluster) resetOffsets(ctx context.Context, topic, group string) error {
	var commits []kafkago.OffsetCommit
	for p := range k.partitions {
		commits = append(commits, kafkago.OffsetCommit{Partition: p, Offset: 0})
	}
	var err error
	deadline := time.Now().Add(30 * time.Second) // killed members leave after their session
	for time.Now().Before(deadline) {
		err = func() error {
			tr := &kafkago.Transport{} // not the default one: it caches connections across broker restarts
			defer tr.CloseIdleConnections()
			client := &kafkago.Client{Addr: kafkago.TCP(k.broker.Brokers()...), Timeout: 3 * time.Second, Transport: tr}
			resp, err := client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{
				GroupID: group, GenerationID: -1, Topics: map[string][]kafkago.OffsetCommit{topic: commits},
			})
			if err != nil {
				return err
			}
			for _, p := range resp.Topics[topic] {
				if p.Error != nil {
					return p.Error
				}
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			break
		}
	}
	return fmt.Errorf("reset the offsets of group %s: %w", group, err)
}

// seenObserver records the records whose delivery was settled as processed
// or as a duplicate.
type seenObserver struct {
	mu    sync.Mutex
	seen  map[[2]int64]bool
	total int
	done  chan struct{}
}

func (o *seenObserver) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}

func (o *seenObserver) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (o *seenObserver) DeliveryDone(_ context.Context, m *consumer.Message, d consumer.Delivery) {
	if d.Result != consumer.Processed && d.Result != consumer.Duplicate {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	k := [2]int64{int64(m.Partition), m.Offset}
	if !o.seen[k] {
		o.seen[k] = true
		if len(o.seen) == o.total {
			close(o.done)
		}
	}
}

func (o *seenObserver) count() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.seen))
}

// replay resets the group of cfg to the start of its topic on k and
// consumes every record again, in this process, with the role's handler and
// options (the same inbox); it returns the records read and how many rows
// rows() gained meanwhile.
func (e *env) replay(ctx context.Context, k kafkaCluster, cfg workerConfig, rows func(context.Context) (int64, error)) (replayed, added int64, err error) {
	if err := k.resetOffsets(ctx, cfg.topic, cfg.group); err != nil {
		return 0, 0, err
	}
	lag, total, err := k.lag(ctx, cfg.topic, cfg.group)
	if err != nil {
		return 0, 0, err
	}
	before, err := rows(ctx)
	if err != nil {
		return 0, 0, err
	}
	e.logf("replay: group %s reset to offset 0, %d records of %d to read again", cfg.group, lag, total)
	logger := newLogger(cfg)
	r, err := newRole(e.pool, cfg, logger)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	obs := &seenObserver{seen: map[[2]int64]bool{}, total: int(total), done: make(chan struct{})}
	if total == 0 {
		close(obs.done)
	}
	kc, err := newKafkaConsumer(cfg, r.h, append(r.opts, consumer.WithObserver(obs)), r.kafkaLog)
	if err != nil {
		return 0, 0, err
	}
	rctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- kc.Run(rctx) }()
	select {
	case <-obs.done:
	case err = <-errc:
		stop()
		return obs.count(), 0, fmt.Errorf("replay: %w", err)
	case <-ctx.Done():
	}
	stop()
	if rerr := <-errc; rerr != nil {
		return obs.count(), 0, fmt.Errorf("replay: %w", rerr)
	}
	replayed = obs.count()
	after, err := rows(ctx)
	if err != nil {
		return replayed, 0, err
	}
	added = after - before
	e.logf("replay: read %d records from offset 0 again: %d new rows", replayed, added)
	if replayed < total {
		return replayed, added, fmt.Errorf("replay read %d of %d records: %w", replayed, total, ctx.Err())
	}
	return replayed, added, nil
}
