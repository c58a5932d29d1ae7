package kafkatest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Defaults of the options.
const (
	// DefaultPartitions is the number of partitions of a topic created
	// automatically or by [Broker.CreateTopic] without a count.
	DefaultPartitions = 3
	// DefaultBrokers is the number of broker nodes.
	DefaultBrokers = 1
)

// Option configures a broker; [New] and [Start] validate it.
type Option func(*config) error

type config struct {
	brokers      int
	partitions   int
	dataDir      string
	ports        []int
	noAutoCreate bool
	minSession   time.Duration
	brokerCfg    map[string]string
	tls          *tls.Config
	users        []saslUser
}

// saslUser is a user of WithSASLUser.
type saslUser struct {
	mechanism      SASLMechanism
	name, password string
}

// WithBrokers runs n broker nodes (n ≥ 1). Default: [DefaultBrokers], or
// one per port of [WithPorts]. Each partition has one replica, its leader;
// [Broker.MoveLeader] moves it. It conflicts with a [WithPorts] that gives
// another number of ports (an error from New).
func WithBrokers(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithBrokers(%d): must be at least 1", n)
		}
		c.brokers = n
		return nil
	}
}

// WithPartitions sets the number of partitions of a topic that is created
// automatically or by [Broker.CreateTopic] with 0 partitions. Default:
// [DefaultPartitions]. It conflicts with no other option.
func WithPartitions(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithPartitions(%d): must be at least 1", n)
		}
		c.partitions = n
		return nil
	}
}

// WithDataDir keeps the broker's data (topics, records, committed offsets)
// in dir, created if needed, so a broker started again on dir has them.
// The data is written continuously and completed on Close. Default: in
// memory only. It conflicts with no other option; with [WithPorts], a
// broker started again on dir also has the same addresses.
func WithDataDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("WithDataDir: empty directory")
		}
		c.dataDir = dir
		return nil
	}
}

// WithPorts makes the broker nodes listen on 127.0.0.1 at the given ports,
// one per node, instead of on random free ports, so that clients find a
// broker started again at the same address. It sets the number of nodes
// unless [WithBrokers] is also given, in which case the counts must match
// (another count is an error from New). Default: random free ports, which
// [Broker.Restart] keeps.
func WithPorts(ports ...int) Option {
	return func(c *config) error {
		if len(ports) == 0 {
			return errors.New("WithPorts: no port")
		}
		for _, p := range ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("WithPorts: invalid port %d", p)
			}
		}
		c.ports = append([]int(nil), ports...)
		return nil
	}
}

// WithoutAutoTopicCreation makes the broker answer "unknown topic" for a
// topic that was not created with [Broker.CreateTopic], as production
// clusters usually do. Default: a topic is created, with
// [WithPartitions] partitions, when a client first asks for it. It
// conflicts with no other option.
func WithoutAutoTopicCreation() Option {
	return func(c *config) error { c.noAutoCreate = true; return nil }
}

// WithMinSessionTimeout sets the shortest consumer-group session timeout the
// broker accepts (group.min.session.timeout.ms), for tests whose consumers
// use short sessions to leave a group quickly. Default: 6 s, as Kafka. It
// conflicts with [WithBrokerConfig] for "group.min.session.timeout.ms", the
// same setting (an error from New).
func WithMinSessionTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithMinSessionTimeout(%v): must be positive", d)
		}
		c.minSession = d
		return nil
	}
}

// WithBrokerConfig sets a broker configuration value, e.g.
// "message.max.bytes" (the largest record batch a producer may send,
// 1 048 588 by default), "compression.type" or "log.retention.ms". Given
// several times, the values add up (the last value of a name wins).
// Default: Kafka's defaults. For "group.min.session.timeout.ms" it
// conflicts with [WithMinSessionTimeout] (an error from New).
func WithBrokerConfig(name, value string) Option {
	return func(c *config) error {
		if name == "" {
			return errors.New("WithBrokerConfig: empty name")
		}
		if c.brokerCfg == nil {
			c.brokerCfg = map[string]string{}
		}
		c.brokerCfg[name] = value
		return nil
	}
}

// WithTLS makes the broker accept only TLS connections, with cfg as the
// server's configuration: it must hold the server certificate
// (Certificates or GetCertificate), valid for 127.0.0.1, where the
// broker listens and what it advertises to clients. With ClientAuth set
// to tls.RequireAndVerifyClientCert the broker also requires client
// certificates signed by cfg.ClientCAs (mutual TLS). cfg must not be
// changed afterwards. Default: plain TCP. It conflicts with no other
// option; with [WithSASLUser], clients authenticate inside the TLS
// connection, as on a managed Kafka service.
//
// The broker's own helpers ([Broker.CreateTopic], [Broker.TopicSize],
// [Broker.Committed]) connect with TLS too and trust the certificate the
// broker serves (its leaf in cfg.Certificates); with mutual TLS they
// present the first certificate of cfg.Certificates as theirs, so it
// must be usable as a client certificate too (its ExtKeyUsage includes
// client authentication) and be signed by a CA in cfg.ClientCAs. The
// package-level [TopicSize] knows none of this and speaks plain TCP.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) error {
		switch {
		case cfg == nil:
			return errors.New("WithTLS: nil config")
		case len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil:
			return errors.New("WithTLS: the config has no server certificate (Certificates or GetCertificate)")
		}
		c.tls = cfg
		return nil
	}
}

// SASLMechanism is a SASL mechanism the broker authenticates clients
// with ([WithSASLUser]).
type SASLMechanism string

// The SASL mechanisms of [WithSASLUser].
const (
	// SASLPlain sends the user name and password as they are (use it with
	// [WithTLS], as a real cluster would).
	SASLPlain SASLMechanism = "PLAIN"
	// SASLScramSHA256 is SCRAM with SHA-256 (RFC 7677): the password never
	// crosses the connection.
	SASLScramSHA256 SASLMechanism = "SCRAM-SHA-256"
	// SASLScramSHA512 is SCRAM with SHA-512.
	SASLScramSHA512 SASLMechanism = "SCRAM-SHA-512"
)

// WithSASLUser adds a user, with its password, that the broker
// authenticates with mechanism, and turns SASL authentication on: the
// broker then answers a client only once it has authenticated as one of
// its users, with that user's mechanism, closing the connection of a
// client that sends anything else first. A wrong password or an unknown
// user is answered, as Kafka does, with error 58
// SASL_AUTHENTICATION_FAILED before the connection closes (kafka-go's
// kafka.SASLAuthenticationFailed). Given several times, the users add
// up; one name may have a user for each mechanism. Every user may do
// everything (no ACLs). Default: no SASL; any client is served. It
// conflicts with no other option.
//
// The broker's own helpers ([Broker.CreateTopic], [Broker.TopicSize],
// [Broker.Committed]) authenticate as the first user given. The password
// appears in no error of this package.
func WithSASLUser(mechanism SASLMechanism, user, password string) Option {
	return func(c *config) error {
		switch {
		case mechanism != SASLPlain && mechanism != SASLScramSHA256 && mechanism != SASLScramSHA512:
			return fmt.Errorf("WithSASLUser: unknown mechanism %q (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", string(mechanism))
		case user == "":
			return errors.New("WithSASLUser: empty user name")
		case password == "":
			return fmt.Errorf("WithSASLUser: user %q: empty password", user)
		}
		for _, u := range c.users {
			if u.mechanism == mechanism && u.name == user {
				return fmt.Errorf("WithSASLUser: user %q given twice for %s", user, mechanism)
			}
		}
		c.users = append(c.users, saslUser{mechanism: mechanism, name: user, password: password})
		return nil
	}
}

// minSessionConfig is the broker setting WithMinSessionTimeout sets.
const minSessionConfig = "group.min.session.timeout.ms"

// kfakeOptions returns the options of a cluster; stopping is set before the
// cluster is closed.
func (c *config) kfakeOptions(stopping *atomic.Bool) []kfake.Opt {
	opts := []kfake.Opt{
		kfake.NumBrokers(c.brokers),
		kfake.DefaultNumPartitions(c.partitions),
	}
	if !c.noAutoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if c.dataDir != "" {
		opts = append(opts, kfake.DataDir(c.dataDir))
	}
	if len(c.ports) > 0 {
		opts = append(opts, kfake.Ports(c.ports...))
	}
	if c.minSession > 0 {
		opts = append(opts, kfake.GroupMinSessionTimeout(c.minSession))
	}
	if len(c.brokerCfg) > 0 {
		opts = append(opts, kfake.BrokerConfigs(c.brokerCfg))
	}
	if fn := c.listenFn(stopping); fn != nil {
		opts = append(opts, kfake.ListenFn(fn))
	}
	if len(c.users) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range c.users {
			opts = append(opts, kfake.Superuser(string(u.mechanism), u.name, u.password))
		}
	}
	return opts
}

// clientTLS is the TLS configuration of the broker's own helpers: it
// trusts exactly the certificates the broker serves and, for mutual TLS,
// presents the broker's own certificate.
func (c *config) clientTLS() *tls.Config {
	if c.tls == nil {
		return nil
	}
	var leaves [][]byte
	for _, crt := range c.tls.Certificates {
		if len(crt.Certificate) > 0 {
			leaves = append(leaves, crt.Certificate[0])
		}
	}
	out := &tls.Config{
		// The helpers talk to this process's own listener: they check the
		// served certificate against the configured one (pinning) instead
		// of a CA, which the server configuration does not name.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(leaves) == 0 {
				return nil // GetCertificate: nothing to pin
			}
			for _, l := range leaves {
				if len(raw) > 0 && bytes.Equal(raw[0], l) {
					return nil
				}
			}
			return errors.New("kafkatest: the broker serves a certificate that is not its own")
		},
	}
	if c.tls.ClientAuth >= tls.VerifyClientCertIfGiven && len(c.tls.Certificates) > 0 {
		out.Certificates = c.tls.Certificates[:1]
	}
	return out
}

// clientSASL is the SASL mechanism of the broker's own helpers: the first
// user's.
func (c *config) clientSASL() (sasl.Mechanism, error) {
	if len(c.users) == 0 {
		return nil, nil
	}
	u := c.users[0]
	switch u.mechanism {
	case SASLPlain:
		return plain.Mechanism{Username: u.name, Password: u.password}, nil
	case SASLScramSHA256, SASLScramSHA512:
		algo := scram.SHA256
		if u.mechanism == SASLScramSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, u.name, u.password)
		if err != nil {
			// The SCRAM client's error quotes the password.
			return nil, fmt.Errorf("WithSASLUser: user %q: the name or password is not valid for SCRAM (SASLprep refused it)", u.name)
		}
		return m, nil
	}
	return nil, fmt.Errorf("WithSASLUser: unknown mechanism %q", string(u.mechanism))
}

// Broker is an in-process Kafka cluster of one or more broker nodes. A
// Broker is safe for concurrent use.
type Broker struct {
	cfg  config
	sasl sasl.Mechanism // of the helpers; nil without SASL

	mu       sync.Mutex
	cluster  *kfake.Cluster // nil once closed
	addrs    []string
	stopping *atomic.Bool // of the cluster: set before it closes
}

// New starts a broker. Close it when done. An invalid option, or two that
// conflict, is an error naming the option.
func New(opts ...Option) (*Broker, error) {
	cfg := config{brokers: 0, partitions: DefaultPartitions}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("kafkatest: %w", err)
		}
	}
	switch {
	case cfg.brokers == 0 && len(cfg.ports) > 0:
		cfg.brokers = len(cfg.ports)
	case cfg.brokers == 0:
		cfg.brokers = DefaultBrokers
	case len(cfg.ports) > 0 && len(cfg.ports) != cfg.brokers:
		return nil, fmt.Errorf("kafkatest: WithPorts gives %d ports for %d brokers", len(cfg.ports), cfg.brokers)
	}
	if _, ok := cfg.brokerCfg[minSessionConfig]; ok && cfg.minSession > 0 {
		return nil, fmt.Errorf("kafkatest: WithMinSessionTimeout conflicts with WithBrokerConfig(%q): both set the same value", minSessionConfig)
	}
	m, err := cfg.clientSASL()
	if err != nil {
		return nil, fmt.Errorf("kafkatest: %w", err)
	}
	b := &Broker{cfg: cfg, sasl: m}
	if err := b.start(cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// Start starts a broker for the test t and stops it when the test ends. It
// fails the test if the broker cannot start.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// start starts a cluster of cfg.
func (b *Broker) start(cfg config) error {
	stopping := new(atomic.Bool)
	c, err := kfake.NewCluster(cfg.kfakeOptions(stopping)...)
	if err != nil {
		return fmt.Errorf("kafkatest: start: %w", err)
	}
	b.cluster, b.addrs, b.stopping = c, c.ListenAddrs(), stopping
	return nil
}

// stop closes the cluster; b.mu is held.
func (b *Broker) stop() {
	if b.cluster != nil {
		b.stopping.Store(true)
		b.cluster.Close()
		b.cluster = nil
	}
}

// Brokers returns the bootstrap addresses (host:port) of the broker nodes.
func (b *Broker) Brokers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.addrs...)
}

// Close stops the broker: it closes every client connection and, with
// [WithDataDir], completes writing its data. Calling it again does nothing.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stop()
}

// Restart stops the broker and starts it again at the same addresses, as
// a broker outage followed by recovery. Clients reconnect on their own. The
// broker keeps its topics, records and committed offsets only with
// [WithDataDir]; without it, it starts empty. Restart after Close starts
// the broker again.
func (b *Broker) Restart() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stop()
	ports := b.cfg.ports
	if len(ports) == 0 {
		for _, a := range b.addrs {
			_, p, err := net.SplitHostPort(a)
			if err != nil {
				return fmt.Errorf("kafkatest: restart: address %s: %w", a, err)
			}
			n, err := strconv.Atoi(p)
			if err != nil {
				return fmt.Errorf("kafkatest: restart: address %s: %w", a, err)
			}
			ports = append(ports, n)
		}
	}
	cfg := b.cfg
	cfg.ports = ports
	var err error
	for range 50 { // a port may take a moment to be free again
		if err = b.start(cfg); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// MoveLeader makes broker node n (0-based, in the order of
// [Broker.Brokers]) the leader of a partition, as a leader election in a
// real cluster does: clients writing to or reading from the partition get a
// "not leader" error and must find the new leader. It holds the broker's
// lock throughout, so Close and Restart wait for it: the cluster it moves
// the leader on is never closed under it (which would leave it waiting
// forever).
func (b *Broker) MoveLeader(topic string, partition, n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cluster == nil {
		return errors.New("kafkatest: move leader: broker closed")
	}
	if err := b.cluster.MoveTopicPartition(topic, int32(partition), int32(n)); err != nil {
		return fmt.Errorf("kafkatest: move leader of %s/%d to node %d: %w", topic, partition, n, err)
	}
	return nil
}

// client returns a client with a transport of its own (the default one
// caches metadata and connections across broker restarts); call the
// returned function when done.
func client(brokers []string) (*kafkago.Client, func()) {
	return clientWith(brokers, &kafkago.Transport{})
}

func clientWith(brokers []string, t *kafkago.Transport) (*kafkago.Client, func()) {
	return &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second, Transport: t}, t.CloseIdleConnections
}

// client returns a client of the broker's own, with its TLS and SASL
// settings.
func (b *Broker) client() (*kafkago.Client, func()) {
	return clientWith(b.Brokers(), &kafkago.Transport{TLS: b.cfg.clientTLS(), SASL: b.sasl})
}

// CreateTopic creates topic with the given number of partitions (0:
// [WithPartitions]). Creating a topic that exists is an error.
func (b *Broker) CreateTopic(ctx context.Context, topic string, partitions int) error {
	if partitions == 0 {
		partitions = b.cfg.partitions
	}
	client, done := b.client()
	defer done()
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
	}})
	if err != nil {
		return fmt.Errorf("kafkatest: create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil {
		return fmt.Errorf("kafkatest: create topic %s: %w", topic, err)
	}
	return nil
}

// TopicSize returns the number of records in topic: the sum over its
// partitions of the last offset minus the first, what a consumer reading
// from the start receives. A topic that does not exist is an error (and is
// not created).
func (b *Broker) TopicSize(ctx context.Context, topic string) (int, error) {
	client, done := b.client()
	defer done()
	return topicSize(ctx, client, topic)
}

// TopicSize is [Broker.TopicSize] for any Kafka cluster reachable at
// brokers over plain TCP without authentication.
func TopicSize(ctx context.Context, brokers []string, topic string) (int, error) {
	client, done := client(brokers)
	defer done()
	return topicSize(ctx, client, topic)
}

func topicSize(ctx context.Context, client *kafkago.Client, topic string) (int, error) {
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("kafkatest: metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 {
		return 0, fmt.Errorf("kafkatest: metadata of %s: %d topics in the answer", topic, len(meta.Topics))
	}
	if meta.Topics[0].Error != nil {
		return 0, fmt.Errorf("kafkatest: metadata of %s: %w", topic, meta.Topics[0].Error)
	}
	var reqs []kafkago.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
	}
	resp, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, fmt.Errorf("kafkatest: offsets of %s: %w", topic, err)
	}
	n := 0
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("kafkatest: offsets of %s/%d: %w", topic, p.Partition, p.Error)
		}
		n += int(p.LastOffset - p.FirstOffset)
	}
	return n, nil
}

// Committed returns the offsets consumer group has committed on topic, by
// partition: the offset of the next record the group will read. A
// partition without a committed offset is absent.
func (b *Broker) Committed(ctx context.Context, group, topic string) (map[int]int64, error) {
	client, done := b.client()
	defer done()
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafkatest: metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("kafkatest: metadata of %s: %v", topic, meta.Topics)
	}
	var parts []int
	for _, p := range meta.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	resp, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("kafkatest: committed offsets of %s on %s: %w", group, topic, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("kafkatest: committed offsets of %s on %s: %w", group, topic, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafkatest: committed offset of %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}
