package kafkapub

import (
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/uuidforge/uuidforge/publisher"
)

// Defaults.
const (
	// DefaultMaxBodySize stays under Kafka's default message.max.bytes
	// (1 048 588 bytes per record batch) with room for key and headers.
	DefaultMaxBodySize = 1_000_000
	// DefaultBatchSize is the most records PublishBatch puts in one
	// produce request per partition.
	DefaultBatchSize = 1000
	// DefaultBatchTimeout is how long PublishBatch lets a partial batch wait
	// for more records (kafka-go's own default is 1 s).
	DefaultBatchTimeout = time.Millisecond
	// DefaultWriteTimeout bounds one produce request.
	DefaultWriteTimeout = 10 * time.Second
)

type config struct {
	acks         kafkago.RequiredAcks
	balancer     kafkago.Balancer
	batchSize    int
	batchTimeout time.Duration
	writeTimeout time.Duration
	autoCreate   bool
	transport    kafkago.RoundTripper
}

func defaultConfig() config {
	return config{
		acks:         kafkago.RequireAll,
		balancer:     &kafkago.Hash{},
		batchSize:    DefaultBatchSize,
		batchTimeout: DefaultBatchTimeout,
		writeTimeout: DefaultWriteTimeout,
	}
}

// WithRequiredAcks sets the acknowledgement level. Default: kafka-go's
// RequireAll (all in-sync replicas), not the zero value's RequireNone.
func WithRequiredAcks(acks kafkago.RequiredAcks) publisher.Option {
	return publisher.TransportOption("kafkapub.WithRequiredAcks", func(c *config) error {
		switch acks {
		case kafkago.RequireAll, kafkago.RequireOne, kafkago.RequireNone:
			c.acks = acks
			return nil
		}
		return fmt.Errorf("invalid required acks %d", acks)
	})
}

// WithBalancer sets how records are assigned to partitions. Default:
// &kafka.Hash{} (FNV-1a of the record key), so all messages with one key go to
// one partition and keep their order. kafka.Murmur2Balancer{} matches the Java
// client's partitioner. A balancer that ignores keys breaks per-key order.
func WithBalancer(b kafkago.Balancer) publisher.Option {
	return publisher.TransportOption("kafkapub.WithBalancer", func(c *config) error {
		if b == nil {
			return errors.New("nil balancer")
		}
		c.balancer = b
		return nil
	})
}

// WithBatchSize sets the largest number of records per partition in one
// produce request of PublishBatch. Default: [DefaultBatchSize].
func WithBatchSize(n int) publisher.Option {
	return publisher.TransportOption("kafkapub.WithBatchSize", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("batch size %d < 1", n)
		}
		c.batchSize = n
		return nil
	})
}

// WithBatchTimeout sets how long PublishBatch waits to fill a partial
// batch. Default: [DefaultBatchTimeout]. Publish never waits: it writes at
// once.
func WithBatchTimeout(d time.Duration) publisher.Option {
	return publisher.TransportOption("kafkapub.WithBatchTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("batch timeout %v <= 0", d)
		}
		c.batchTimeout = d
		return nil
	})
}

// WithWriteTimeout bounds one produce request. Default: [DefaultWriteTimeout].
func WithWriteTimeout(d time.Duration) publisher.Option {
	return publisher.TransportOption("kafkapub.WithWriteTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("write timeout %v <= 0", d)
		}
		c.writeTimeout = d
		return nil
	})
}

// WithAutoTopicCreation lets the first write to a missing topic create it,
// when the broker allows it. Default: off.
func WithAutoTopicCreation() publisher.Option {
	return publisher.TransportOption("kafkapub.WithAutoTopicCreation", func(c *config) error { c.autoCreate = true; return nil })
}

// WithTransport sets kafka-go's transport (TLS, SASL, client ID). Default:
// kafka-go's default transport.
func WithTransport(t kafkago.RoundTripper) publisher.Option {
	return publisher.TransportOption("kafkapub.WithTransport", func(c *config) error {
		if t == nil {
			return errors.New("nil transport")
		}
		c.transport = t
		return nil
	})
}
