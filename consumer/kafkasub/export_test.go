package kafkasub

import (
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
)

// WithCommitHook calls f just before each offset commit, with the partition
// and the offset about to be committed.
func WithCommitHook(f func(partition int, offset int64)) consumer.Option {
	return consumer.TransportOption("kafkasub.WithCommitHook", func(c *config) error {
		c.onCommit = f
		return nil
	})
}

// ReaderDialer returns the Dialer c's readers, group and (through a
// Transport) dead-letter writer and Ping connect with.
func ReaderDialer(c *Consumer) *kafkago.Dialer { return c.cfg.rc.Dialer }
