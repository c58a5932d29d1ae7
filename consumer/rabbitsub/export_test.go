package rabbitsub

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
)

// DialFunc dials one broker URL.
type DialFunc = func(url string, cfg amqp.Config) (*amqp.Connection, error)

// WithDial wraps the consumer's dial function, so a test can count, keep
// and cut the consumer's connections.
func WithDial(wrap func(next DialFunc) DialFunc) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDial", func(c *config) error { c.wrapDial = wrap; return nil })
}

// WithoutGuard dials with amqp.DialConfig, without the guard that takes
// unreadable header tables out of deliveries, so a test can see what the
// consumer does when such a message reaches the client.
func WithoutGuard() consumer.Option {
	return consumer.TransportOption("rabbitsub.WithoutGuard", func(c *config) error { c.unguarded = true; return nil })
}
