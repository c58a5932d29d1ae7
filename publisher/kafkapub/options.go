package kafkapub

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/uuidforge/uuidforge/publisher"
)

// Defaults.
const (
	// DefaultMaxBodySize stays under Kafka's default message.max.bytes
	// (1 048 588 bytes per record batch) with room for key and headers.
	DefaultMaxBodySize = 1_000_000
	// DefaultBatchSize is the most records of one partition sent in one
	// produce request.
	DefaultBatchSize = 1000
	// DefaultWriteTimeout bounds one produce request.
	DefaultWriteTimeout = 10 * time.Second
)

// Acks is how many replicas must store a record before the broker
// acknowledges it.
type Acks int

const (
	// AcksAll waits for every in-sync replica (Kafka's acks=all): an
	// acknowledged record survives the loss of the leader. The default.
	AcksAll Acks = iota + 1
	// AcksLeader waits for the partition leader only (acks=1): a record
	// acknowledged just before the leader fails can be lost.
	AcksLeader
	// AcksNone waits for nothing (acks=0): Publish returns once the request
	// is sent, and the broker never reports a failure. Records can be lost
	// without an error.
	AcksNone
)

// String returns "all", "leader" or "none".
func (a Acks) String() string {
	switch a {
	case AcksAll:
		return "all"
	case AcksLeader:
		return "leader"
	case AcksNone:
		return "none"
	}
	return fmt.Sprintf("Acks(%d)", int(a))
}

func (a Acks) required() kafkago.RequiredAcks {
	switch a {
	case AcksLeader:
		return kafkago.RequireOne
	case AcksNone:
		return kafkago.RequireNone
	}
	return kafkago.RequireAll
}

// Partitioner chooses the partition of a record from its key. Records of
// one key always go to one partition (while the topic's partition count
// stays the same), so they keep their order. Records without a key are
// spread over the partitions.
type Partitioner int

const (
	// PartitionHash is the FNV-1a hash of the key modulo the partition
	// count, as Sarama and kafka-go's Hash balancer place records. The
	// default.
	PartitionHash Partitioner = iota + 1
	// PartitionMurmur2 is the murmur2 hash of the key, as the Java client's
	// default partitioner (and librdkafka's murmur2 partitioners) place
	// records: use it when producers in other languages write the same
	// keys to the same topic and per-key order must hold across them.
	PartitionMurmur2
)

// String returns "hash" or "murmur2".
func (p Partitioner) String() string {
	switch p {
	case PartitionHash:
		return "hash"
	case PartitionMurmur2:
		return "murmur2"
	}
	return fmt.Sprintf("Partitioner(%d)", int(p))
}

type config struct {
	acks         Acks
	partitioner  Partitioner
	batchSize    int
	writeTimeout time.Duration
	autoCreate   bool
	tls          *tls.Config
	sasl         sasl.Mechanism
	clientID     string
	transport    func(*kafkago.Transport)
}

func defaultConfig() config {
	return config{
		acks:         AcksAll,
		partitioner:  PartitionHash,
		batchSize:    DefaultBatchSize,
		writeTimeout: DefaultWriteTimeout,
	}
}

// WithAcks sets how many replicas must store a record before Publish
// returns. Default: [AcksAll]. It conflicts with no other option; with
// [AcksNone] the broker reports no failure, so nothing is written again.
func WithAcks(a Acks) publisher.Option {
	return publisher.TransportOption("kafkapub.WithAcks", func(c *config) error {
		switch a {
		case AcksAll, AcksLeader, AcksNone:
			c.acks = a
			return nil
		}
		return fmt.Errorf("unknown acks %d", int(a))
	})
}

// WithPartitioner sets how records are assigned to partitions. Default:
// [PartitionHash]. It conflicts with no other option.
func WithPartitioner(p Partitioner) publisher.Option {
	return publisher.TransportOption("kafkapub.WithPartitioner", func(c *config) error {
		switch p {
		case PartitionHash, PartitionMurmur2:
			c.partitioner = p
			return nil
		}
		return fmt.Errorf("unknown partitioner %d", int(p))
	})
}

// WithBatchSize sets the largest number of records of one partition sent
// in one produce request. Concurrent Publish calls and PublishBatch share
// requests up to this size (and about 1 MB). Default: [DefaultBatchSize].
// It conflicts with no other option.
func WithBatchSize(n int) publisher.Option {
	return publisher.TransportOption("kafkapub.WithBatchSize", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("batch size %d < 1", n)
		}
		c.batchSize = n
		return nil
	})
}

// WithWriteTimeout bounds one produce request: a request without an answer
// by then fails and its records are sent again (while the caller's context
// lasts). Default: [DefaultWriteTimeout]. It conflicts with no other
// option. It does not bound [Publisher.Ping], which a context without a
// deadline bounds by DefaultWriteTimeout.
func WithWriteTimeout(d time.Duration) publisher.Option {
	return publisher.TransportOption("kafkapub.WithWriteTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("write timeout %v <= 0", d)
		}
		c.writeTimeout = d
		return nil
	})
}

// WithAutoTopicCreation lets the first publish (or [Publisher.Ping]) create
// a missing topic, when the broker allows it (auto.create.topics.enable).
// Default: off; a missing topic makes Publish retry until its context ends
// and Ping fail. It conflicts with no other option.
func WithAutoTopicCreation() publisher.Option {
	return publisher.TransportOption("kafkapub.WithAutoTopicCreation", func(c *config) error { c.autoCreate = true; return nil })
}

// WithTLS connects to the brokers with TLS configured by cfg (which must
// not be changed afterwards): RootCAs to trust a private CA, Certificates
// for a client certificate. A broker certificate that cfg does not trust
// fails Publish and [Publisher.Ping] at once, without retries. Default:
// plain TCP. It conflicts with no other option; [WithTransportConfig] sees
// it (Transport.TLS) and may replace it.
func WithTLS(cfg *tls.Config) publisher.Option {
	return publisher.TransportOption("kafkapub.WithTLS", func(c *config) error {
		if cfg == nil {
			return errors.New("nil TLS config")
		}
		c.tls = cfg
		return nil
	})
}

// WithSASL authenticates to the brokers with m, a mechanism from kafka-go's
// sasl/plain or sasl/scram packages (the one kafka-go type in this
// package's options besides [WithTransportConfig]). Use it with [WithTLS]
// unless the network is trusted: PLAIN sends the password as is. Credentials
// the broker refuses fail Publish and [Publisher.Ping] at once, without
// retries, with an error wrapping kafka-go's SASLAuthenticationFailed that
// does not show the password. Default: no authentication. It conflicts
// with no other option;
// [WithTransportConfig] sees it (Transport.SASL) and may replace it.
func WithSASL(m sasl.Mechanism) publisher.Option {
	return publisher.TransportOption("kafkapub.WithSASL", func(c *config) error {
		if m == nil {
			return errors.New("nil mechanism")
		}
		c.sasl = m
		return nil
	})
}

// WithClientID sets the client ID the brokers see in their logs and
// quotas. Default: none, so requests carry an empty client ID (kafka-go's
// DefaultClientID, "program@host (github.com/segmentio/kafka-go)", is used
// by its Conn, not by the Transport the publisher uses); clusters that set
// quotas by client ID need this option. It conflicts with no other option;
// [WithTransportConfig] sees it (Transport.ClientID) and may replace it.
func WithClientID(id string) publisher.Option {
	return publisher.TransportOption("kafkapub.WithClientID", func(c *config) error {
		if id == "" {
			return errors.New("empty client ID")
		}
		c.clientID = id
		return nil
	})
}

// WithTransportConfig is an escape hatch: f may change the kafka-go
// Transport the publisher talks to the brokers with (dial timeouts,
// metadata refresh interval, a custom Dial or resolver), for publishing and
// for [Publisher.Ping]. It runs in New after the other options, so it sees,
// and may change, what [WithTLS], [WithSASL] and [WithClientID] set; given
// several times, only the last f runs.
//
// The Transport f receives has MetadataTTL set to [DefaultMetadataTTL]
// (1 s) and every other field at kafka-go's defaults besides those three
// options' (DialTimeout and IdleTimeout 0, which kafka-go reads as 5 s and
// 30 s). New does not fill in anything after f: a MetadataTTL that f sets
// to 0 means kafka-go's own default, 6 s, not DefaultMetadataTTL. New
// validates the result: durations must not be negative, and
// MetadataTopics, if set, must include the publisher's topic.
//
// Default: no function; the Transport described above is used as is.
func WithTransportConfig(f func(*kafkago.Transport)) publisher.Option {
	return publisher.TransportOption("kafkapub.WithTransportConfig", func(c *config) error {
		if f == nil {
			return errors.New("nil function")
		}
		c.transport = f
		return nil
	})
}

// DefaultMetadataTTL is how long the publisher trusts the cluster's
// metadata (which broker leads which partition) before asking again, where
// kafka-go's own default is 6 s: after a leader election, a publish that
// meets the old leader waits at most about this long before it reaches the
// new one. It is the MetadataTTL of the kafka-go Transport New builds
// (kafka-go treats it as an upper bound and randomises below it).
// [WithTransportConfig] can set another MetadataTTL; setting it to 0 there
// gives kafka-go's 6 s, not this value.
const DefaultMetadataTTL = time.Second

// newTransport builds the transport of cfg and validates what the escape
// hatch left.
func (c *config) newTransport(topic string) (*kafkago.Transport, error) {
	t := &kafkago.Transport{TLS: c.tls, SASL: c.sasl, ClientID: c.clientID, MetadataTTL: DefaultMetadataTTL}

	if c.transport != nil {
		c.transport(t)
		switch {
		case t.DialTimeout < 0, t.IdleTimeout < 0, t.MetadataTTL < 0:
			return nil, fmt.Errorf("kafkapub: kafkapub.WithTransportConfig: negative duration (dial %v, idle %v, metadata TTL %v)",
				t.DialTimeout, t.IdleTimeout, t.MetadataTTL)
		case len(t.MetadataTopics) > 0 && !slices.Contains(t.MetadataTopics, topic):
			return nil, fmt.Errorf("kafkapub: kafkapub.WithTransportConfig: MetadataTopics %v lacks the topic %q", t.MetadataTopics, topic)
		}
	}
	return t, nil
}
