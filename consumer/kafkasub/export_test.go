package kafkasub

import "github.com/uuidforge/uuidforge/consumer"

// WithCommitHook calls f just before each offset commit, with the partition
// and the offset about to be committed.
func WithCommitHook(f func(partition int, offset int64)) consumer.Option {
	return consumer.TransportOption("kafkasub.WithCommitHook", func(c *config) error {
		c.onCommit = f
		return nil
	})
}
