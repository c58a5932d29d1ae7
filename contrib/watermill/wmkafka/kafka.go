package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/bridge"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// ErrClosed is returned by a Publisher or Subscriber used after Close.
var ErrClosed = errors.New("wmkafka: closed")

// Publisher is a Watermill message.Publisher over our Kafka publisher
// (package kafkapub), one per topic, created on the first publish to it:
// acknowledged writes retried with backoff, deterministic IDs and lineage
// in record headers, the business key (metadata wmforge.MetadataMessageKey)
// as record key, so one entity's messages keep their order. Messages are
// converted with wmforge.PublisherMessage: their Watermill UUID and
// metadata survive the trip exactly, and one published from a handler
// whose context it carries (see wmforge.NewMessageContext) gets the handled
// message's correlation ID and its ID as causation ID.
//
// Publish returns once the broker acknowledged every record, retrying for
// at most [WithPublishTimeout]. Several messages in one call are written as
// one batch when they share a context. It is safe for concurrent use.
type Publisher struct {
	brokers []string
	gen     *forge.Generator
	cfg     config

	mu     sync.Mutex
	topics map[string]*kafkapub.Publisher
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher to the cluster reachable at brokers
// that derives IDs with gen. It validates the kafkapub options and does no
// I/O.
func NewPublisher(brokers []string, gen *forge.Generator, opts ...Option) (*Publisher, error) {
	if gen == nil {
		return nil, errors.New("wmkafka: NewPublisher: nil generator")
	}
	cfg, err := apply(pub, opts)
	if err != nil {
		return nil, err
	}
	probe, err := kafkapub.New(brokers, "wmkafka", gen, cfg.pubOpts...)
	if err != nil {
		return nil, fmt.Errorf("wmkafka: NewPublisher: %w", err)
	}
	_ = probe.Close()
	return &Publisher{brokers: brokers, gen: gen, cfg: cfg, topics: map[string]*kafkapub.Publisher{}}, nil
}

func (p *Publisher) topic(topic string) (*kafkapub.Publisher, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if tp, ok := p.topics[topic]; ok {
		return tp, nil
	}
	tp, err := kafkapub.New(p.brokers, topic, p.gen, p.cfg.pubOpts...)
	if err != nil {
		return nil, fmt.Errorf("wmkafka: %w", err)
	}
	p.topics[topic] = tp
	return tp, nil
}

// Publish writes msgs to topic and returns once the broker acknowledged
// them all.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	tp, err := p.topic(topic)
	if err != nil {
		return err
	}
	pms := make([]publisher.Message, len(msgs))
	ctxs := make([]context.Context, len(msgs))
	same := true
	for i, m := range msgs {
		pm, ctx, err := wmforge.PublisherMessage(p.gen, topic, m)
		if err != nil {
			return fmt.Errorf("wmkafka: publish to %s: message %q: %w", topic, m.UUID, err)
		}
		pms[i], ctxs[i] = pm, ctx
		same = same && ctx == ctxs[0]
	}
	if same {
		ctx, cancel := context.WithTimeout(ctxs[0], p.cfg.publishTimeout)
		defer cancel()
		if len(pms) == 1 {
			err = tp.Publish(ctx, pms[0])
		} else {
			err = tp.PublishBatch(ctx, pms...)
		}
		if err != nil {
			return fmt.Errorf("wmkafka: publish to %s: %w", topic, err)
		}
		return nil
	}
	for i := range pms {
		ctx, cancel := context.WithTimeout(ctxs[i], p.cfg.publishTimeout)
		err := tp.Publish(ctx, pms[i])
		cancel()
		if err != nil {
			return fmt.Errorf("wmkafka: publish to %s: message %q: %w", topic, msgs[i].UUID, err)
		}
	}
	return nil
}

// Close waits for the publishes in progress and closes every topic's
// writers.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	topics := p.topics
	p.topics = nil
	p.mu.Unlock()
	var errs []error
	for _, tp := range topics {
		if err := tp.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wmkafka: %w", err)
	}
	return nil
}

// Subscriber is a Watermill message.Subscriber over our Kafka consumer
// loop (package kafkasub) as a member of one consumer group: records are
// committed only after they are done, a partition's records are handled in
// order, lineage is kept and, with [WithDedupe], messages are deduplicated
// with any dedupe.Store. Each Subscribe runs one consumer loop whose
// handler hands every record to the returned channel, converted with
// wmforge.WatermillMessage (UUID and metadata as published), and waits for
// the message's Ack or Nack; only then is the offset committed (after the
// dedupe completions of wmforge.Deduplicator and of [WithDedupe] are
// stored) or the record delivered again.
//
// A Nack redelivers the record in place — after the consumer's backoff
// (consumer.WithBackoff), without limit, holding back its partition — so
// nothing is ever skipped, as Watermill expects; [WithDeadLetterAfter]
// dead-letters instead after N nacks. A record nacked by
// wmforge.Deduplicator because another member holds its claim is
// delivered again after that member's lease.
//
// A new group starts at the oldest record (kafkasub.WithStartOffset
// changes it). The message's context carries its lineage and ends once the
// message is acked or nacked, or the subscription ends. It is safe for
// concurrent use.
type Subscriber struct {
	brokers []string
	group   string
	cfg     config
	base    bridge.Config
	subs    bridge.Subscriptions
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a subscriber that reads as a member of group from
// the cluster reachable at brokers. It validates its options, the
// consumer's included, and does no I/O.
func NewSubscriber(brokers []string, group string, opts ...Option) (*Subscriber, error) {
	cfg, err := apply(sub, opts)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{brokers: brokers, group: group, cfg: cfg, base: bridge.Config{
		Consumer: cfg.conOpts, Store: cfg.store, DeadLetterAfter: cfg.deadAfter, Logger: cfg.logger,
	}}
	noop := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	if _, err := kafkasub.New(brokers, "wmkafka", group, noop, s.base.Options(group+"/wmkafka")...); err != nil {
		return nil, fmt.Errorf("wmkafka: NewSubscriber: %w", err)
	}
	return s, nil
}

// Scope returns the dedupe scope of a topic's subscription: "<group>/<topic>".
func (s *Subscriber) Scope(topic string) string { return s.group + "/" + topic }

// SubscribeInitialize creates the topic, with [WithPartitions] partitions,
// when it does not exist.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A transport of its own: kafka-go's default one keeps connections to
	// addresses that may belong to a broker gone since (and then answers
	// with an unexpected EOF).
	transport := &kafkago.Transport{TLS: s.cfg.tls, SASL: s.cfg.sasl}
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(s.brokers...), Timeout: 10 * time.Second, Transport: transport}
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: topic, NumPartitions: s.cfg.partitions, ReplicationFactor: 1},
	}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("wmkafka: create topic %s: %w", topic, err)
	}
	return nil
}

// Subscribe starts consuming topic as a member of the subscriber's group;
// the returned channel is closed when ctx ends or the subscriber is closed.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	scope := s.Scope(topic)
	if s.cfg.store != nil {
		if err := (dedupe.Key{Scope: scope, ID: [16]byte{1}}).Validate(); err != nil {
			return nil, fmt.Errorf("wmkafka: subscribe to %s: %q as dedupe scope: %w", topic, scope, err)
		}
	}
	out, err := s.subs.Start(ctx, &s.base, "wmkafka", time.Second, func(h consumer.Handler) (bridge.Runner, error) {
		return kafkasub.New(s.brokers, topic, s.group, h, s.base.Options(scope)...)
	})
	if errors.Is(err, bridge.ErrClosed) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("wmkafka: subscribe to %s: %w", topic, err)
	}
	return out, nil
}

// Close ends every subscription, leaves the records handed out and not yet
// acked uncommitted (they come back to the group) and waits until the
// output channels are closed.
func (s *Subscriber) Close() error {
	s.subs.Close()
	return nil
}
