package rabbitpub

import (
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/publisher"
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

type config struct {
	exchange       string
	routingKey     func(*publisher.Message) string
	mandatory      bool
	deliveryMode   uint8
	contentType    string
	poolSize       int
	confirmTimeout time.Duration
	amqpConfig     amqp.Config
	dial           func(url string, cfg amqp.Config) (*amqp.Connection, error)
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
		dial:           amqp.DialConfig,
	}
}

// WithExchange publishes to the named exchange. Default: "" (the default
// exchange, which routes by queue name).
func WithExchange(name string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithExchange", func(c *config) error {
		if len(name) > maxShortString {
			return fmt.Errorf("exchange name longer than %d bytes", maxShortString)
		}
		c.exchange = name
		return nil
	})
}

// WithRoutingKey sets the function computing a message's routing key.
// Default: the message type. Use a constant function to publish every
// message to one queue through the default exchange.
func WithRoutingKey(f func(*publisher.Message) string) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithRoutingKey", func(c *config) error {
		if f == nil {
			return errors.New("nil routing key function")
		}
		c.routingKey = f
		return nil
	})
}

// WithMandatory sets the mandatory flag. Default: true, so a message no queue
// receives fails with [publisher.ErrUnroutable] instead of being dropped.
func WithMandatory(on bool) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithMandatory", func(c *config) error { c.mandatory = on; return nil })
}

// WithTransient publishes with delivery mode 1 (not persisted by the broker).
// Default: persistent (delivery mode 2).
func WithTransient() publisher.Option {
	return publisher.TransportOption("rabbitpub.WithTransient", func(c *config) error { c.deliveryMode = amqp.Transient; return nil })
}

// WithContentType sets the content-type property. Default: [DefaultContentType].
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
// [DefaultPoolSize]. Must be at least 1.
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
// message is published again. Default: [DefaultConfirmTimeout].
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
// amqp.DialConfig (TLS, heartbeat, connection name...). Default: a 10 s
// heartbeat. Do not set its Recovery field: the publisher reconnects itself
// and republishes unconfirmed messages.
func WithAMQPConfig(cfg amqp.Config) publisher.Option {
	return publisher.TransportOption("rabbitpub.WithAMQPConfig", func(c *config) error {
		if cfg.Recovery != nil {
			return errors.New("amqp.Config.Recovery must be nil: the publisher recovers connections itself")
		}
		c.amqpConfig = cfg
		return nil
	})
}
