package wmrabbit

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/publisher"
)

// DefaultPublishTimeout bounds one Publish call: Watermill's Publish takes
// no context, and our publisher retries until its context ends.
const DefaultPublishTimeout = time.Minute

// Option configures a [Publisher] or a [Subscriber]. Each option says which
// it applies to; giving one to the other is an error from its constructor.
type Option func(*config) error

type config struct {
	side           string // "NewPublisher" or "NewSubscriber", for errors
	exchange       string
	group          string
	pubOpts        []publisher.Option
	conOpts        []consumer.Option
	store          dedupe.Store
	deadAfter      int
	publishTimeout time.Duration
	logger         *slog.Logger
}

func only(side, name string, f func(*config) error) Option {
	return func(c *config) error {
		if c.side != side {
			return fmt.Errorf("%s is not an option of %s", name, c.side)
		}
		if err := f(c); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
}

const (
	pub = "NewPublisher"
	sub = "NewSubscriber"
)

// WithExchange routes every topic through the named direct exchange
// (declared durable), with the topic as routing key, instead of through the
// default exchange to a queue named after the topic. Subscribers bind their
// queue to the exchange with the topic as key. Give the same exchange to
// publishers and subscribers. Default: "" (a queue per topic).
func WithExchange(name string) Option {
	return func(c *config) error {
		if name == "" || len(name) > 255 {
			return fmt.Errorf("WithExchange(%.32q): a name of 1 to 255 bytes", name)
		}
		c.exchange = name
		return nil
	}
}

// WithGroup makes the subscriber a member of a consumer group: each
// subscribed topic is read from the queue "<topic>.<group>", bound to the
// exchange of [WithExchange] (required) with the topic as key, so every
// group receives every message of the topic and the members of one group
// share them. Default: one queue per topic, named after the topic, shared by
// every subscriber. Subscriber only.
func WithGroup(group string) Option {
	return only(sub, "wmrabbit.WithGroup", func(c *config) error {
		if group == "" {
			return errors.New("empty group")
		}
		c.group = group
		return nil
	})
}

// WithPublisherOptions passes opts to the underlying rabbitpub publisher
// (rabbitpub.WithConfirmTimeout, publisher.WithBackoff, ...). Given several
// times, the options add up. Publisher only.
func WithPublisherOptions(opts ...publisher.Option) Option {
	return only(pub, "wmrabbit.WithPublisherOptions", func(c *config) error {
		c.pubOpts = append(c.pubOpts, opts...)
		return nil
	})
}

// WithConsumerOptions passes opts to the underlying rabbitsub consumer of
// every subscription (rabbitsub.WithPrefetch, consumer.WithBackoff,
// consumer.WithLogger, ...). Given several times, the options add up. Do
// not pass consumer.WithDedupe: its one scope would be shared by every
// topic, so an ID seen on one topic would be a duplicate on the others; use
// [WithDedupe]. Subscriber only.
func WithConsumerOptions(opts ...consumer.Option) Option {
	return only(sub, "wmrabbit.WithConsumerOptions", func(c *config) error {
		c.conOpts = append(c.conOpts, opts...)
		return nil
	})
}

// WithDedupe deduplicates in the consumer loop with store, before a message
// reaches Watermill: a message is handed to the subscription's channel once
// per ID (claim, hand over, complete on Ack before the broker ack, release
// on Nack), with the subscription's queue name as scope. Default: no
// deduplication (use wmforge.Deduplicator in the router, or both with
// different scopes). Subscriber only.
func WithDedupe(store dedupe.Store) Option {
	return only(sub, "wmrabbit.WithDedupe", func(c *config) error {
		if store == nil {
			return errors.New("nil store")
		}
		c.store = store
		return nil
	})
}

// WithDeadLetterAfter dead-letters a message nacked n times (our
// consumer's dead letter: the queue "<queue>.dead-letter" unless
// rabbitsub options say otherwise), and at once a message nacked with a
// consumer.Permanent reason by wmforge.Deduplicator. Default: a nacked
// message is delivered again, without limit, as Watermill expects of a
// Nack; nothing is ever dropped or dead-lettered. Subscriber only.
func WithDeadLetterAfter(n int) Option {
	return only(sub, "wmrabbit.WithDeadLetterAfter", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.deadAfter = n
		return nil
	})
}

// WithPublishTimeout bounds each Publish call, retries included. Default:
// [DefaultPublishTimeout]. Publisher only.
func WithPublishTimeout(d time.Duration) Option {
	return only(pub, "wmrabbit.WithPublishTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%v <= 0", d)
		}
		c.publishTimeout = d
		return nil
	})
}

// WithLogger logs what the adapter itself does (restarting a consumer
// loop) on l; the consumer loop's own logging is set with
// consumer.WithLogger. Default: slog.Default(). Subscriber only.
func WithLogger(l *slog.Logger) Option {
	return only(sub, "wmrabbit.WithLogger", func(c *config) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.logger = l
		return nil
	})
}

func apply(side string, opts []Option) (config, error) {
	c := config{side: side, publishTimeout: DefaultPublishTimeout, logger: slog.Default()}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return config{}, fmt.Errorf("wmrabbit: %s: %w", side, err)
		}
	}
	if c.group != "" && c.exchange == "" {
		return config{}, fmt.Errorf("wmrabbit: %s: WithGroup needs WithExchange (a group's queue is bound to the exchange)", side)
	}
	return c, nil
}
