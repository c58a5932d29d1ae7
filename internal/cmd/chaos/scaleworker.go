package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// The scale scenario's messages: an original goes to the RabbitMQ quorum
// queue, the forwarders publish its derived message to Kafka.
const (
	typeScaleOriginal  = "chaos.scale.original"
	typeScaleForwarded = "chaos.scale.forwarded"
)

// scaleRetention is how long the Redis Cluster store keeps a completion:
// longer than any run; the run deletes its keys at the end.
const scaleRetention = time.Hour

// replicaAckTimeout is how long a forwarder's completion waits for its
// replica (redisstore.WithReplicaAcks), below the client's 3 s read timeout.
const replicaAckTimeout = time.Second

// scaleBody is the body of an original and of its derived message.
type scaleBody struct {
	Run string `json:"run"`
	N   int64  `json:"n"`
}

func parseScaleBody(m *consumer.Message) (scaleBody, error) {
	var b scaleBody
	if err := json.Unmarshal(m.Body, &b); err != nil {
		return b, consumer.Permanent(fmt.Errorf("chaos: %s %s: %w", m.Type, m.ID, err))
	}
	return b, nil
}

// scaleTopology is the scale scenario's queue: a quorum queue, with a
// member on every node of the cluster, whose messages the broker moves to
// the quorum dead-letter queue after 50 failed deliveries; the consumers'
// own dead letters go there too. Every forwarder and the coordinator's
// publisher declare it on each connect.
func scaleTopology(queue string) rabbitmq.Topology {
	dlq := queue + consumer.DeadLetterSuffix
	return rabbitmq.Topology{Queues: []rabbitmq.Queue{
		{Name: dlq, Type: rabbitmq.Quorum},
		{Name: queue, Type: rabbitmq.Quorum, DeliveryLimit: 50, DeadLetterExchange: "", DeadLetterRoutingKey: dlq},
	}}
}

// redisLog passes go-redis's own log lines (failed dials while a primary
// is down) to a logger, at WARN.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.l.Warn("redis: " + fmt.Sprintf(format, v...))
}

// newRedisStore is the forwarders' dedupe store: the Redis Cluster, every
// completion acknowledged only once a replica holds it, so that the kill
// of a primary cannot lose a completion the store reported.
func newRedisStore(cfg workerConfig) (dedupe.Store, func(), error) {
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:       strings.Split(cfg.redis, ","),
		DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
	})
	store, err := redisstore.New(client, redisstore.WithPrefix(cfg.tables.redisPrefix()),
		redisstore.WithReplicaAcks(1, replicaAckTimeout))
	if err != nil {
		_ = client.Close()
		return nil, nil, fmt.Errorf("chaos: redis store: %w", err)
	}
	return store, func() { _ = client.Close() }, nil
}

// forwardHandler is stage 1 of the scale scenario: for each original it
// publishes the derived message to Kafka (its ID derives from the
// original's, so every run of the handler publishes the same ID), then may
// fail as the chances say, after the publish, so that the message is
// handled, and its derived message published, again.
type forwardHandler struct {
	*faulty
	pub *kafkapub.Publisher
}

func newForwarder(f *faulty, cfg workerConfig) (*forwardHandler, error) {
	gen, err := forge.New(namespace)
	if err != nil {
		return nil, err
	}
	// Partition leaders move during the run: learn the new leader within
	// half a second rather than kafka-go's 6 s metadata TTL.
	pub, err := kafkapub.New(strings.Split(cfg.kafka, ","), cfg.topic, gen, kafkapub.WithWriteTimeout(3*time.Second),
		kafkapub.WithTransportConfig(func(t *kafkago.Transport) { t.MetadataTTL = 500 * time.Millisecond }))
	if err != nil {
		return nil, fmt.Errorf("chaos: kafka publisher: %w", err)
	}
	return &forwardHandler{faulty: f, pub: pub}, nil
}

func (f *forwardHandler) close() { _ = f.pub.Close() }

func (f *forwardHandler) Handle(ctx context.Context, m *consumer.Message) error {
	b, err := parseScaleBody(m)
	if err != nil {
		return err
	}
	if err := f.pub.Publish(ctx, publisher.Message{Type: typeScaleForwarded, Key: []any{b.Run, b.N}, Body: m.Body}); err != nil {
		return fmt.Errorf("chaos: forward %s: %w", m.ID, err)
	}
	return f.inject(ctx, m)
}

// applyHandler is stage 2 of the scale scenario: one effect row per
// derived message, in the inbox's transaction.
type applyHandler struct {
	*faulty
	effects string
}

func (a *applyHandler) Handle(ctx context.Context, m *consumer.Message) error {
	b, err := parseScaleBody(m)
	if err != nil {
		return err
	}
	if a.dropped(ctx, m) {
		return nil
	}
	return inTx(ctx, a.pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+a.effects+" (message_id, causation_id, n, worker, attempt) VALUES ($1, $2, $3, $4, $5)",
			m.ID, m.CausationID, b.N, a.worker, m.Attempt); err != nil {
			return fmt.Errorf("chaos: write effect of %s: %w", m.ID, err)
		}
		return a.inject(ctx, m)
	})
}

// deliveryRecorder is the forwarders' observer: it records every delivery
// settled as processed (the handler succeeded and the store reported its
// completion) or as a duplicate, in batches, off the consuming goroutines.
// A killed process loses the records of its last 50 ms: the check built on
// them can miss a repeated completion then, never invent one. Safe for
// concurrent use.
type deliveryRecorder struct {
	pool   *pgxpool.Pool
	table  string
	worker int
	logger *slog.Logger
	ch     chan recorded
	done   chan struct{}
	once   sync.Once
}

type recorded struct {
	id     uuid.UUID
	result string
}

func newDeliveryRecorder(pool *pgxpool.Pool, table string, worker int, logger *slog.Logger) *deliveryRecorder {
	r := &deliveryRecorder{pool: pool, table: table, worker: worker, logger: logger, ch: make(chan recorded, 4096), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *deliveryRecorder) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}

func (r *deliveryRecorder) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (r *deliveryRecorder) DeliveryDone(_ context.Context, m *consumer.Message, d consumer.Delivery) {
	switch d.Result {
	case consumer.Processed:
		r.ch <- recorded{m.ID, "processed"}
	case consumer.Duplicate:
		r.ch <- recorded{m.ID, "duplicate"}
	}
}

func (r *deliveryRecorder) run() {
	defer close(r.done)
	var batch [][]any
	flush := func() {
		for try := 0; len(batch) > 0 && try < 20; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := r.pool.CopyFrom(ctx, pgx.Identifier{r.table}, []string{"message_id", "result", "worker"}, pgx.CopyFromRows(batch))
			cancel()
			if err == nil {
				batch = batch[:0]
				return
			}
			r.logger.Warn("chaos: record deliveries", "error", err)
			time.Sleep(100 * time.Millisecond)
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case rec, ok := <-r.ch:
			if !ok {
				flush()
				return
			}
			batch = append(batch, []any{rec.id, rec.result, r.worker})
			if len(batch) >= 500 {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// close writes what is left; the consumers have stopped.
func (r *deliveryRecorder) close() {
	r.once.Do(func() { close(r.ch) })
	<-r.done
}

// generationLog is the appliers' consumer-group logger: it records each
// group generation a member joined (kafka-go logs "Joined group ... in
// generation N" once per join), from which the run counts the rebalances.
// Safe for concurrent use.
type generationLog struct {
	pool   *pgxpool.Pool
	table  string
	worker int
}

func (g *generationLog) Printf(format string, args ...any) {
	gen, ok := joinedGeneration(format, args)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = g.pool.Exec(ctx, "INSERT INTO "+g.table+" (generation, worker) VALUES ($1, $2)", gen, g.worker)
}

// joinedGeneration returns the generation of kafka-go's "Joined group %s
// as member %s in generation %d" log line.
func joinedGeneration(format string, args []any) (int32, bool) {
	if !strings.HasPrefix(format, "Joined group ") || !strings.HasSuffix(format, " in generation %d") || len(args) == 0 {
		return 0, false
	}
	gen, ok := args[len(args)-1].(int32)
	return gen, ok
}
