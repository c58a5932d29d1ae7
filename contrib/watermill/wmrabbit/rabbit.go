package wmrabbit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/bridge"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// ErrClosed is returned by a Publisher or Subscriber used after Close.
var ErrClosed = errors.New("wmrabbit: closed")

// declareTimeout bounds one topology declaration.
const declareTimeout = 10 * time.Second

// declare declares what topic needs on the broker at url: the exchange, the
// queue (unless one of that name exists, whatever its arguments) and its
// binding, over a connection of its own.
func declare(ctx context.Context, url string, exchange, queue, key string) error {
	ctx, cancel := context.WithTimeout(ctx, declareTimeout)
	defer cancel()
	conn, err := amqp.DialConfig(url, amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US",
		Dial: func(network, addr string) (net.Conn, error) { return new(net.Dialer).DialContext(ctx, network, addr) }})
	if err != nil {
		return fmt.Errorf("wmrabbit: declare on %s: %w", rabbitmq.Redact(url), err)
	}
	defer conn.Close()
	var topo rabbitmq.Topology
	if exchange != "" {
		topo.Exchanges = []rabbitmq.Exchange{{Name: exchange, Kind: amqp.ExchangeDirect}}
	}
	if queue != "" {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("wmrabbit: declare: %w", err)
		}
		// An existing queue is used as it is (a quorum queue, a queue
		// with a dead-letter exchange), not declared again with other
		// arguments.
		if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
			topo.Queues = []rabbitmq.Queue{{Name: queue}}
		} else {
			_ = ch.Close()
		}
		if exchange != "" {
			topo.Bindings = []rabbitmq.Binding{{Exchange: exchange, Queue: queue, Key: key}}
		}
	}
	if topo.IsZero() {
		return nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("wmrabbit: declare: %w", err)
	}
	defer ch.Close()
	if err := topo.Declare(ch); err != nil {
		return fmt.Errorf("wmrabbit: %w", err)
	}
	return nil
}

// Publisher is a Watermill message.Publisher over our RabbitMQ publisher
// (package rabbitpub): publisher confirms, reconnection, deterministic IDs
// and lineage. Messages are converted with wmforge.PublisherMessage:
// their Watermill UUID and metadata survive the trip exactly, and one
// published from a handler whose context it carries (see
// wmforge.NewMessageContext) gets the handled message's correlation ID and
// its ID as causation ID.
//
// A topic is a queue of that name reached through the default exchange,
// declared durable on the first publish to it (an existing queue is used
// as it is), or, with [WithExchange], a routing key of that exchange.
// Messages are mandatory: one that reaches no queue fails with an error
// wrapping publisher.ErrUnroutable (pass rabbitpub.WithMandatory(false)
// with [WithPublisherOptions] to drop it instead).
//
// Publish returns once the broker confirmed every message, retrying as
// rabbitpub does for at most [WithPublishTimeout]. Several messages in one
// call are published as one batch when they share a context. It is safe
// for concurrent use.
type Publisher struct {
	url string
	gen *forge.Generator
	cfg config
	p   *rabbitpub.Publisher

	mu       sync.Mutex
	declared map[string]bool
	closed   bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher to the broker at url that derives IDs
// with gen. It does no I/O.
func NewPublisher(url string, gen *forge.Generator, opts ...Option) (*Publisher, error) {
	if gen == nil {
		return nil, errors.New("wmrabbit: NewPublisher: nil generator")
	}
	cfg, err := apply(pub, opts)
	if err != nil {
		return nil, err
	}
	popts := cfg.pubOpts
	if cfg.exchange != "" {
		popts = append([]publisher.Option{rabbitpub.WithExchange(cfg.exchange)}, popts...)
	}
	p, err := rabbitpub.New(url, gen, popts...)
	if err != nil {
		return nil, fmt.Errorf("wmrabbit: %w", err)
	}
	return &Publisher{url: url, gen: gen, cfg: cfg, p: p, declared: map[string]bool{}}, nil
}

// Publish publishes msgs to topic and returns once the broker confirmed
// them all.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if topic == "" || len(topic) > 255 {
		return fmt.Errorf("wmrabbit: publish: topic %.32q: a name of 1 to 255 bytes", topic)
	}
	if err := p.declare(msgs[0].Context(), topic); err != nil {
		return err
	}
	pms := make([]publisher.Message, len(msgs))
	ctxs := make([]context.Context, len(msgs))
	same := true
	for i, m := range msgs {
		pm, ctx, err := wmforge.PublisherMessage(p.gen, topic, m)
		if err != nil {
			return fmt.Errorf("wmrabbit: publish to %s: message %q: %w", topic, m.UUID, err)
		}
		pm.RoutingKey = topic
		pms[i], ctxs[i] = pm, ctx
		same = same && ctx == ctxs[0]
	}
	if same {
		ctx, cancel := context.WithTimeout(ctxs[0], p.cfg.publishTimeout)
		defer cancel()
		var err error
		if len(pms) == 1 {
			err = p.p.Publish(ctx, pms[0])
		} else {
			err = p.p.PublishBatch(ctx, pms...)
		}
		if err != nil {
			return fmt.Errorf("wmrabbit: publish to %s: %w", topic, err)
		}
		return nil
	}
	for i := range pms {
		ctx, cancel := context.WithTimeout(ctxs[i], p.cfg.publishTimeout)
		err := p.p.Publish(ctx, pms[i])
		cancel()
		if err != nil {
			return fmt.Errorf("wmrabbit: publish to %s: message %q: %w", topic, msgs[i].UUID, err)
		}
	}
	return nil
}

// declare declares topic's queue (or the exchange) once per publisher.
func (p *Publisher) declare(ctx context.Context, topic string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	name := topic
	if p.cfg.exchange != "" {
		name = ""
	}
	if p.declared[name] {
		return nil
	}
	if err := declare(ctx, p.url, p.cfg.exchange, name, ""); err != nil {
		return err
	}
	p.declared[name] = true
	return nil
}

// Close waits for the publishes in progress and closes the connection.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if err := p.p.Close(); err != nil {
		return fmt.Errorf("wmrabbit: %w", err)
	}
	return nil
}

// Subscriber is a Watermill message.Subscriber over our RabbitMQ consumer
// loop (package rabbitsub): manual acks, a prefetch window, workers,
// reconnection, lineage and, with [WithDedupe], deduplication with any
// dedupe.Store. Each Subscribe runs one consumer loop whose handler hands
// every delivery to the returned channel, converted with
// wmforge.WatermillMessage (UUID and metadata as published), and waits for
// the message's Ack or Nack; only then is the delivery acknowledged at the
// broker (after the dedupe completions of wmforge.Deduplicator and of
// [WithDedupe] are stored) or delivered again.
//
// A Nack redelivers the message — in place, after the consumer's backoff
// (consumer.WithBackoff), without limit — so nothing is ever dropped, as
// Watermill expects; [WithDeadLetterAfter] dead-letters instead after N
// nacks. A message nacked by wmforge.Deduplicator because another consumer
// holds its claim is delivered again after that consumer's lease.
//
// A topic is read from the durable queue named after it, or, with
// [WithExchange] and [WithGroup], from "<topic>.<group>" bound to the
// exchange; Subscribe and SubscribeInitialize declare it (an existing queue
// is used as it is). The message's context carries its lineage (so
// messages published from the handler derive their IDs from it) and ends
// once the message is acked or nacked, or the subscription ends. It is safe
// for concurrent use.
type Subscriber struct {
	url  string
	cfg  config
	base bridge.Config
	subs bridge.Subscriptions
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a subscriber to the broker at url. It validates
// its options, the consumer's included, and does no I/O.
func NewSubscriber(url string, opts ...Option) (*Subscriber, error) {
	cfg, err := apply(sub, opts)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{url: url, cfg: cfg, base: bridge.Config{
		Consumer: cfg.conOpts, Store: cfg.store, DeadLetterAfter: cfg.deadAfter, Logger: cfg.logger,
	}}
	// Let rabbitsub validate the URL and the options now.
	if _, err := rabbitsub.New(url, "wmrabbit", consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }), s.base.Options("wmrabbit")...); err != nil {
		return nil, fmt.Errorf("wmrabbit: NewSubscriber: %w", err)
	}
	return s, nil
}

// Queue returns the queue a topic is read from.
func (s *Subscriber) Queue(topic string) string {
	if s.cfg.group != "" {
		return topic + "." + s.cfg.group
	}
	return topic
}

// SubscribeInitialize declares the topic's queue (and exchange and binding).
func (s *Subscriber) SubscribeInitialize(topic string) error {
	return s.initialize(context.Background(), topic)
}

func (s *Subscriber) initialize(ctx context.Context, topic string) error {
	q := s.Queue(topic)
	if topic == "" || len(q) > 255 {
		return fmt.Errorf("wmrabbit: subscribe: queue %.32q: a name of 1 to 255 bytes", q)
	}
	if err := (dedupe.Key{Scope: q, ID: [16]byte{1}}).Validate(); s.cfg.store != nil && err != nil {
		return fmt.Errorf("wmrabbit: subscribe: queue %q as dedupe scope: %w", q, err)
	}
	return declare(ctx, s.url, s.cfg.exchange, q, topic)
}

// Subscribe declares the topic's queue and starts consuming it; the
// returned channel is closed when ctx ends or the subscriber is closed.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := s.initialize(ctx, topic); err != nil {
		return nil, err
	}
	q := s.Queue(topic)
	backoff := consumer.DefaultMaxBackoff
	out, err := s.subs.Start(ctx, &s.base, "wmrabbit", backoff, func(h consumer.Handler) (bridge.Runner, error) {
		return rabbitsub.New(s.url, q, h, s.base.Options(q)...)
	})
	if errors.Is(err, bridge.ErrClosed) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("wmrabbit: subscribe to %s: %w", topic, err)
	}
	return out, nil
}

// Close ends every subscription, returns the messages handed out and not
// yet acked to the broker, and waits until the output channels are closed.
func (s *Subscriber) Close() error {
	s.subs.Close()
	return nil
}
