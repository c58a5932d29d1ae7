package wmkafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go/sasl"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// Defaults.
const (
	// DefaultPublishTimeout bounds one Publish call: Watermill's Publish
	// takes no context, and our publisher retries until its context ends.
	DefaultPublishTimeout = time.Minute
	// DefaultPartitions is the number of partitions SubscribeInitialize
	// creates a missing topic with.
	DefaultPartitions = 1
)

// Option configures a [Publisher] or a [Subscriber]. Each option says which
// it applies to; giving one to the other is an error from its constructor.
type Option func(*config) error

type config struct {
	side           string // "NewPublisher" or "NewSubscriber", for errors
	pubOpts        []publisher.Option
	conOpts        []consumer.Option
	store          dedupe.Store
	deadAfter      int
	publishTimeout time.Duration
	partitions     int
	logger         *slog.Logger
	tls            *tls.Config    // WithTLS, for SubscribeInitialize
	sasl           sasl.Mechanism // WithSASL, for SubscribeInitialize
}

const (
	pub = "NewPublisher"
	sub = "NewSubscriber"
)

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

// WithTLS connects to the cluster with TLS configured by cfg (which must
// not be changed afterwards): a Publisher through kafkapub.WithTLS, a
// Subscriber through kafkasub.WithTLS and in SubscribeInitialize's topic
// creation. Default: plain TCP. Give TLS here rather than through
// [WithPublisherOptions] or [WithConsumerOptions], which do not reach
// SubscribeInitialize. It conflicts with no other option. Publisher and
// Subscriber.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) error {
		if cfg == nil {
			return errors.New("wmkafka.WithTLS: nil TLS config")
		}
		c.tls = cfg
		c.toBoth(kafkapub.WithTLS(cfg), kafkasub.WithTLS(cfg))
		return nil
	}
}

// WithSASL authenticates to the cluster with m, a mechanism from kafka-go's
// sasl/plain or sasl/scram packages: a Publisher through kafkapub.WithSASL,
// a Subscriber through kafkasub.WithSASL and in SubscribeInitialize's topic
// creation. Use it with [WithTLS] unless the network is trusted. Default:
// no authentication. As for WithTLS, give it here rather than through
// [WithPublisherOptions] or [WithConsumerOptions]. It conflicts with no
// other option. Publisher and Subscriber.
func WithSASL(m sasl.Mechanism) Option {
	return func(c *config) error {
		if m == nil {
			return errors.New("wmkafka.WithSASL: nil mechanism")
		}
		c.sasl = m
		c.toBoth(kafkapub.WithSASL(m), kafkasub.WithSASL(m))
		return nil
	}
}

// toBoth adds p to a Publisher's options, or s to a Subscriber's.
func (c *config) toBoth(p publisher.Option, s consumer.Option) {
	if c.side == pub {
		c.pubOpts = append(c.pubOpts, p)
	} else {
		c.conOpts = append(c.conOpts, s)
	}
}

// WithPublisherOptions passes opts to the underlying kafkapub publisher of
// every topic (kafkapub.WithAcks, kafkapub.WithAutoTopicCreation,
// publisher.WithBackoff, ...). Given several times, the options add up.
// Publisher only.
func WithPublisherOptions(opts ...publisher.Option) Option {
	return only(pub, "wmkafka.WithPublisherOptions", func(c *config) error {
		c.pubOpts = append(c.pubOpts, opts...)
		return nil
	})
}

// WithConsumerOptions passes opts to the underlying kafkasub consumer of
// every subscription (kafkasub.WithPartitionParallelism,
// kafkasub.WithStartOffset, consumer.WithBackoff, consumer.WithLogger, ...).
// Given several times, the options add up. Do not pass consumer.WithDedupe:
// its one scope would be shared by every topic, so an ID seen on one topic
// would be a duplicate on the others; use [WithDedupe]. Subscriber only.
func WithConsumerOptions(opts ...consumer.Option) Option {
	return only(sub, "wmkafka.WithConsumerOptions", func(c *config) error {
		c.conOpts = append(c.conOpts, opts...)
		return nil
	})
}

// WithDedupe deduplicates in the consumer loop with store, before a message
// reaches Watermill: a message is handed to the subscription's channel once
// per ID (claim, hand over, complete on Ack before the offset is
// committed, release on Nack), with "<group>/<topic>" as scope. Default: no
// deduplication (use wmforge.Deduplicator in the router, or both with
// different scopes). Subscriber only.
func WithDedupe(store dedupe.Store) Option {
	return only(sub, "wmkafka.WithDedupe", func(c *config) error {
		if store == nil {
			return errors.New("nil store")
		}
		c.store = store
		return nil
	})
}

// WithDeadLetterAfter writes a record nacked n times to our consumer's
// dead-letter topic ("<topic>.dead-letter" unless kafkasub options say
// otherwise) and commits past it, and at once a record nacked with a
// consumer.Permanent reason by wmforge.Deduplicator. Default: a nacked
// record is delivered again, without limit and without moving past it, as
// Watermill expects of a Nack; nothing is ever skipped. Subscriber only.
func WithDeadLetterAfter(n int) Option {
	return only(sub, "wmkafka.WithDeadLetterAfter", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.deadAfter = n
		return nil
	})
}

// WithPartitions sets the number of partitions SubscribeInitialize creates
// a missing topic with. Default: [DefaultPartitions]. Subscriber only.
func WithPartitions(n int) Option {
	return only(sub, "wmkafka.WithPartitions", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.partitions = n
		return nil
	})
}

// WithPublishTimeout bounds each Publish call, retries included. Default:
// [DefaultPublishTimeout]. Publisher only.
func WithPublishTimeout(d time.Duration) Option {
	return only(pub, "wmkafka.WithPublishTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%v <= 0", d)
		}
		c.publishTimeout = d
		return nil
	})
}

// WithLogger logs what the adapter itself does (restarting a consumer loop
// whose reader failed) on l; the consumer loop's own logging is set with
// consumer.WithLogger. Default: slog.Default(). Subscriber only.
func WithLogger(l *slog.Logger) Option {
	return only(sub, "wmkafka.WithLogger", func(c *config) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.logger = l
		return nil
	})
}

func apply(side string, opts []Option) (config, error) {
	c := config{side: side, publishTimeout: DefaultPublishTimeout, partitions: DefaultPartitions, logger: slog.Default()}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return config{}, fmt.Errorf("wmkafka: %s: %w", side, err)
		}
	}
	return c, nil
}
