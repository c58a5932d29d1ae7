package rabbitpub

import (
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// Defaults.
const (
	// DefaultPoolSize is the number of AMQP channels, each in confirm mode.
	DefaultPoolSize = 4
	// DefaultMaxBodySize matches RabbitMQ 4's default max_message_size (16 MiB).
	DefaultMaxBodySize = 16 << 20
	// DefaultConfirmTimeout is how long one attempt waits for the broker's
	// confirm before publishing again.
	DefaultConfirmTimeout = 30 * time.Second
	// DefaultContentType is the content type set when the message has none.
	DefaultContentType = "application/octet-stream"
)

// maxShortString is the AMQP 0-9-1 limit on shortstr fields (message ID,
// correlation ID, type, routing key, header names).
const maxShortString = 255

// MaxHeaders is the largest number of entries in a message's header table,
// the publisher's own headers (causation-id, message-key) included:
// amqp091-go's reader refuses a bigger table and closes the connection of
// the consumer that receives it. A message with more is rejected with
// [publisher.ErrInvalid].
const MaxHeaders = 8192

// minFrameMax is AMQP's frame-min-size: every connection carries a frame
// of this size, so a content header that fits in it needs no check against
// the negotiated frame_max.
const minFrameMax = 4096

type config struct {
	exchange       string
	routingKey     func(*publisher.Message) string
	queue          string // WithQueue: the routing key of every message
	mandatory      bool
	deliveryMode   uint8
	contentType    string
	poolSize       int
	confirmTimeout time.Duration
	amqpConfig     amqp.Config
	topology       rabbitmq.Topology
	failover       []string // moved into the Endpoints by New, then cleared

	// which options were given, for the conflicts New reports
	exchangeSet, routingKeySet bool
}

func defaultConfig() config {
	return config{
		routingKey:     func(m *publisher.Message) string { return m.Type },
		mandatory:      true,
		deliveryMode:   amqp.Persistent,
		contentType:    DefaultContentType,
		poolSize:       DefaultPoolSize,
		confirmTimeout: DefaultConfirmTimeout,
		amqpConfig:     amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"},
	}
}

// check reports conflicting options; New calls it once all are applied.
func (c *config) check() error {
	if c.queue != "" {
		switch {
		case c.exchangeSet:
			return errors.New("rabbitpub.WithQueue conflicts with rabbitpub.WithExchange: WithQueue publishes through the default exchange")
		case c.routingKeySet:
			return errors.New("rabbitpub.WithQueue conflicts with rabbitpub.WithRoutingKey: WithQueue sets the routing key")
		}
	}
	return nil
}

// WithExchange publishes to the named exchange. Default: "" (the default
// exchange, which routes by queue name). Conflicts with [WithQueue].
func WithExchange(name string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithExchange", func(c *config) error {
		if len(name) > maxShortString {
			return fmt.Errorf("exchange name longer than %d bytes", maxShortString)
		}
		c.exchange, c.exchangeSet = name, true
		return nil
	})
}

// WithRoutingKey sets the function computing a message's routing key.
// Default: the message type. A message's own RoutingKey, when set, is used
// instead. Conflicts with [WithQueue], which is the way to publish every
// message to one queue.
func WithRoutingKey(f func(*publisher.Message) string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithRoutingKey", func(c *config) error {
		if f == nil {
			return errors.New("nil routing key function")
		}
		c.routingKey, c.routingKeySet = f, true
		return nil
	})
}

// WithQueue publishes every message straight to the named queue: through
// the default exchange, with the queue's name as routing key. Default: none
// (the exchange of [WithExchange], routed by message type). Conflicts with
// [WithExchange] and [WithRoutingKey]. A message's own RoutingKey, when
// set, is used instead of the queue's name. The queue must exist: declare it
// with [WithTopology] (a mandatory message to a missing queue fails with
// [publisher.ErrUnroutable]).
func WithQueue(name string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithQueue", func(c *config) error {
		switch {
		case name == "":
			return errors.New("empty queue name")
		case len(name) > maxShortString:
			return fmt.Errorf("queue name longer than %d bytes", maxShortString)
		}
		c.queue = name
		return nil
	})
}

// WithTopology declares t (exchanges, queues, bindings) on every connect
// and reconnect, before anything is published, so a fresh broker or a node
// that lost its definitions is ready for the first message. Given several
// times, the topologies are merged. Default: nothing is declared. A
// declaration the broker refuses (a queue that exists with other arguments,
// missing permissions) fails Ping and every publish at once with an error
// wrapping [rabbitmq.ErrRefused] that names the entity. It conflicts with no
// other option.
func WithTopology(t rabbitmq.Topology) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithTopology", func(c *config) error {
		if err := t.Validate(); err != nil {
			return err
		}
		c.topology = c.topology.Merge(t)
		return nil
	})
}

// WithFailoverURLs adds the URLs of other nodes of the same cluster, dialed
// in turn (see [rabbitmq.Endpoints]) when the node in use cannot be
// reached: the publisher moves to the next node instead of waiting for the
// first. Each is checked like New's URL. Default: none. A node that accepts
// the TCP connection and never answers holds the dial until amqp091-go's
// connection timeout (30 s; set amqp.Config.Dial with [WithAMQPConfig] for
// another) before the next node is tried. It conflicts with no other
// option; every node is dialed with [WithAMQPConfig]'s configuration.
func WithFailoverURLs(urls ...string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithFailoverURLs", func(c *config) error {
		if len(urls) == 0 {
			return errors.New("no URL")
		}
		for _, u := range urls {
			if err := rabbitmq.ParseURL(u); err != nil {
				return err
			}
		}
		c.failover = append(c.failover, urls...)
		return nil
	})
}

// WithMandatory sets the mandatory flag. Default: true, so a message no queue
// receives fails with [publisher.ErrUnroutable] instead of being dropped.
// It conflicts with no other option; with false, a message no queue
// receives is confirmed and dropped by the broker.
func WithMandatory(on bool) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithMandatory", func(c *config) error { c.mandatory = on; return nil })
}

// WithTransient publishes with delivery mode 1 (not persisted by the broker).
// Default: persistent (delivery mode 2). It conflicts with no other option.
func WithTransient() publisher.Option {
	return publisher.TransportOption("rabbitpub.WithTransient", func(c *config) error { c.deliveryMode = amqp.Transient; return nil })
}

// WithContentType sets the content-type property of every message. Default:
// [DefaultContentType]. It conflicts with no other option.
func WithContentType(ct string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithContentType", func(c *config) error {
		if len(ct) > maxShortString {
			return fmt.Errorf("content type longer than %d bytes", maxShortString)
		}
		c.contentType = ct
		return nil
	})
}

// WithPoolSize sets how many channels publish concurrently. Default:
// [DefaultPoolSize]. Must be at least 1. It conflicts with no other option.
func WithPoolSize(n int) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithPoolSize", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("pool size %d < 1", n)
		}
		c.poolSize = n
		return nil
	})
}

// WithConfirmTimeout sets how long one attempt waits for a confirm before the
// message is published again. Default: [DefaultConfirmTimeout]. It
// conflicts with no other option.
func WithConfirmTimeout(d time.Duration) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithConfirmTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("confirm timeout %v <= 0", d)
		}
		c.confirmTimeout = d
		return nil
	})
}

// WithAMQPConfig sets the connection configuration passed to
// amqp.DialConfig for New's URL and every [WithFailoverURLs] node (TLS,
// heartbeat, connection name, Dial with its connection timeout...). It
// replaces the whole configuration. Default: a 10 s heartbeat and locale
// en_US, amqp091-go's defaults for everything else (a zero Heartbeat is
// amqp091-go's 10 s too; a heartbeat in the URL wins over both). Its
// Recovery field conflicts with the publisher, which reconnects itself and
// republishes unconfirmed messages: a non-nil Recovery is an error from New.
func WithAMQPConfig(cfg amqp.Config) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithAMQPConfig", func(c *config) error {
		if cfg.Recovery != nil {
			return errors.New("amqp.Config.Recovery must be nil: the publisher recovers connections itself")
		}
		c.amqpConfig = cfg
		return nil
	})
}
