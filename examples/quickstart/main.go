package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// config is what one run does.
type config struct {
	Orders  int           // orders placed
	Retried int           // how many of them the producer publishes a second time
	Timeout time.Duration // bound on the whole run
}

func main() {
	cfg := config{}
	flag.IntVar(&cfg.Orders, "orders", 10, "number of orders to place")
	flag.IntVar(&cfg.Retried, "retried", 3, "number of orders the producer publishes twice")
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// order is the business data of one placed order. Its number identifies it;
// nothing else (no clock, no random value) goes into its ID.
type order struct {
	Number   string `json:"number"`
	Customer string `json:"customer"`
	Cents    int    `json:"cents"`
}

func (o order) message() (publisher.Message, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return publisher.Message{}, fmt.Errorf("encode order %s: %w", o.Number, err)
	}
	return publisher.Message{Type: "order.placed", Key: []any{o.Number}, Body: body}, nil
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Orders < 1 || cfg.Retried < 0 || cfg.Retried > cfg.Orders {
		return fmt.Errorf("want 1 <= orders and 0 <= retried <= orders, got orders=%d retried=%d", cfg.Orders, cfg.Retried)
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}

	brokers, where, stopKafka, err := startKafka()
	if err != nil {
		return err
	}
	defer stopKafka()
	// A fresh topic per run, so a real cluster (KAFKA_BROKERS) replays only
	// this run's records.
	topic := fmt.Sprintf("quickstart-orders-%d", time.Now().UnixNano())
	fmt.Fprintf(out, "%s at %s, topic %s\n", where, strings.Join(brokers, ","), topic)

	// The generator every service of the shop shares: same namespace, same
	// order number, same ID, in any process and any language.
	gen, err := forge.New("shop.example.com")
	if err != nil {
		return err
	}

	orders := make([]order, cfg.Orders)
	msgs := make([]publisher.Message, cfg.Orders)
	ids := make([]uuid.UUID, cfg.Orders)
	for i := range orders {
		orders[i] = order{
			Number:   fmt.Sprintf("SO-%d", 1001+i),
			Customer: fmt.Sprintf("customer%d@example.com", i%4+1),
			Cents:    1500 + 250*i,
		}
		if msgs[i], err = orders[i].message(); err != nil {
			return err
		}
		// The publisher computes the same ID when it sends the message;
		// computing it here lets the summary check every order was charged.
		l, err := publisher.IDs(ctx, gen, &msgs[i])
		if err != nil {
			return err
		}
		ids[i] = l.MessageID
	}

	pub, err := kafkapub.New(brokers, topic, gen, kafkapub.WithAutoTopicCreation())
	if err != nil {
		return err
	}
	defer pub.Close()

	published := 0
	for i, m := range msgs {
		if err := pub.Publish(ctx, m); err != nil {
			return fmt.Errorf("publish order %s: %w", orders[i].Number, err)
		}
		published++
	}
	fmt.Fprintf(out, "published %d orders; order %s always gets message ID %s\n", cfg.Orders, orders[0].Number, ids[0])

	// A producer that timed out waiting for an acknowledgement sends again.
	// The business data did not change, so neither does the ID.
	var retried []string
	for i := 0; i < cfg.Retried; i++ {
		j := i * cfg.Orders / max(cfg.Retried, 1)
		if err := pub.Publish(ctx, msgs[j]); err != nil {
			return fmt.Errorf("publish order %s again: %w", orders[j].Number, err)
		}
		published++
		retried = append(retried, orders[j].Number)
	}
	if len(retried) > 0 {
		fmt.Fprintf(out, "producer retry: published %s again, with the same IDs\n", strings.Join(retried, ", "))
	}

	// Count what the topic really holds: a publish retried inside the
	// client after a lost acknowledgement would have written a copy too.
	records, err := kafkatest.TopicSize(ctx, brokers, topic)
	if err != nil {
		return err
	}
	if records != published {
		fmt.Fprintf(out, "the topic holds %d records for %d publishes (client retries wrote copies)\n", records, published)
		published = records
	}

	// One store for both passes: it remembers which message IDs were charged.
	store, err := dedupe.NewMemory()
	if err != nil {
		return err
	}
	defer store.Close()
	b := &billing{charged: make(map[uuid.UUID]int), seen: make(map[uuid.UUID]bool)}

	live, err := b.consume(ctx, brokers, topic, "billing", store, published)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "consumer (group billing): %d deliveries, charged %d orders, skipped %d duplicates\n",
		live.delivered, live.delivered-live.duplicates, live.duplicates)

	// Replay: a new group starts at offset 0 and reads everything again. The
	// dedupe scope is the same "billing", so nothing is charged twice.
	replay, err := b.consume(ctx, brokers, topic, "billing-replay", store, published)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "replay from offset 0 (group billing-replay, same store): %d deliveries, charged %d orders, skipped %d duplicates\n",
		replay.delivered, replay.delivered-replay.duplicates, replay.duplicates)

	s := b.summary(ids, published, live, replay)
	fmt.Fprintf(out, "summary: published=%d unique=%d processed=%d duplicates_skipped=%d lost=%d\n",
		s.published, s.unique, s.processed, s.duplicates, s.lost)
	if s.lost != 0 || s.processed != s.unique || s.twice != 0 {
		return fmt.Errorf("not exactly once: %d lost, %d processed for %d unique, %d charged twice", s.lost, s.processed, s.unique, s.twice)
	}
	return nil
}

// billing is the consumer side: it charges orders and counts what it sees.
// Safe for concurrent use.
type billing struct {
	mu      sync.Mutex
	charged map[uuid.UUID]int  // message ID -> times charged (the handler's effect)
	seen    map[uuid.UUID]bool // message IDs delivered at all
}

// pass counts one consumer group's run over the topic.
type pass struct {
	delivered  int // deliveries settled (charged or skipped)
	duplicates int // deliveries the dedupe layer acknowledged without calling the handler
}

// charge is the business handler: in a real shop it would call the payment
// provider. The dedupe layer in front of it makes sure it runs once per
// order.
func (b *billing) charge(_ context.Context, m *consumer.Message) error {
	var o order
	if err := json.Unmarshal(m.Body, &o); err != nil {
		return consumer.Permanent(fmt.Errorf("decode order: %w", err))
	}
	b.mu.Lock()
	b.charged[m.ID]++
	b.mu.Unlock()
	return nil
}

// counter is a consumer.Observer that counts how deliveries end and closes
// done once want of them are settled. Safe for concurrent use.
type counter struct {
	b                     *billing
	want                  int64
	delivered, duplicates atomic.Int64
	done                  chan struct{}
	once                  sync.Once
}

func (c *counter) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	return ctx
}

func (c *counter) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {}

func (c *counter) DeliveryDone(_ context.Context, m *consumer.Message, d consumer.Delivery) {
	switch d.Result {
	case consumer.Duplicate:
		c.duplicates.Add(1)
	case consumer.Processed:
	default:
		return // dead-lettered or handed back: not settled as charged or skipped
	}
	c.b.mu.Lock()
	c.b.seen[m.ID] = true
	c.b.mu.Unlock()
	if c.delivered.Add(1) >= c.want {
		c.once.Do(func() { close(c.done) })
	}
}

// consume runs a consumer group over the topic until want deliveries are
// settled. The consumer builds the standard chain from its options:
// WithDedupe claims each message ID in store under the scope "billing"
// before the handler runs, and acknowledges a duplicate without running it.
func (b *billing) consume(ctx context.Context, brokers []string, topic, group string, store dedupe.Store, want int) (pass, error) {
	count := &counter{b: b, want: int64(want), done: make(chan struct{})}
	c, err := kafkasub.New(brokers, topic, group, consumer.HandlerFunc(b.charge),
		consumer.WithDedupe(store, "billing"),
		consumer.WithObserver(count),
		kafkasub.WithPartitionParallelism(3),
		consumer.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return pass{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()

	select {
	case <-count.done:
		stop()
		if err := <-runErr; err != nil {
			return pass{}, fmt.Errorf("consumer group %s: %w", group, err)
		}
	case err := <-runErr:
		if err == nil {
			err = ctx.Err()
		}
		return pass{}, fmt.Errorf("consumer group %s stopped after %d of %d deliveries: %w", group, count.delivered.Load(), want, err)
	}
	return pass{delivered: int(count.delivered.Load()), duplicates: int(count.duplicates.Load())}, nil
}

type summary struct {
	published, unique, processed, duplicates, lost, twice int
}

// summary counts what happened: want holds the ID of every order published.
func (b *billing) summary(want []uuid.UUID, published int, passes ...pass) summary {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := summary{published: published, unique: len(b.seen)}
	for _, n := range b.charged {
		s.processed += n
		if n > 1 {
			s.twice++
		}
	}
	for _, p := range passes {
		s.duplicates += p.duplicates
	}
	for _, id := range want {
		if b.charged[id] == 0 {
			s.lost++
		}
	}
	return s
}

// startKafka returns the Kafka cluster named by KAFKA_BROKERS
// (comma-separated host:port), or starts an in-process broker when it is
// unset, so that the demo needs no installation. stop shuts the in-process
// broker down.
func startKafka() (brokers []string, where string, stop func(), err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return strings.Split(env, ","), "Kafka", func() {}, nil
	}
	b, err := kafkatest.New()
	if err != nil {
		return nil, "", nil, err
	}
	return b.Brokers(), "in-process Kafka", b.Close, nil
}
