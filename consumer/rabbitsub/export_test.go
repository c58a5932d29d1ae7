package rabbitsub

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
)

// WithDial replaces amqp.DialConfig, so a test can keep the consumer's
// connections and cut them.
func WithDial(f func(url string, cfg amqp.Config) (*amqp.Connection, error)) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDial", func(c *config) error { c.dial = f; return nil })
}
