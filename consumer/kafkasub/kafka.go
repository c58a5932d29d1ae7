package kafkasub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/internal/kafkaauth"
	"github.com/uuidforge/uuidforge/lineage"
)

// config is this transport's own configuration; the shared one is
// consumer.Settings.
type config struct {
	parallel int
	maxBatch int
	dl       *kafkago.Writer
	dlTopic  string
	rc       kafkago.ReaderConfig
	tls      *tls.Config                       // WithTLS, until New puts it in rc.Dialer
	sasl     sasl.Mechanism                    // WithSASL, until New puts it in rc.Dialer
	onCommit func(partition int, offset int64) // tests: called before each commit
}

// WithPartitionParallelism handles up to n partitions at once, one goroutine
// per partition, each in order. Default: 1 (one partition at a time).
func WithPartitionParallelism(n int) consumer.Option {
	return consumer.TransportOption("kafkasub.WithPartitionParallelism", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.parallel = n
		return nil
	})
}

// DefaultMaxBatch is the default of [WithMaxBatch].
const DefaultMaxBatch = 64

// WithMaxBatch processes up to n records of a partition together: the
// records its reader has already fetched when the consumer turns to the
// partition, never waiting for more (a lone record is processed at once).
// A batch goes through [consumer.Processor.ProcessBatch]: with a dedupe
// store that is a [dedupe.BatchStore] its records are claimed in one round
// trip, handled in partition order and completed in one round trip; with a
// [dedupe.BatchInbox] (the PostgreSQL inbox) they are handled in one
// transaction with a savepoint each. Their offsets are then committed once,
// after the last record settled. A record that fails leaves the batch:
// it is retried in place and the records after it follow one at a time.
//
// The claims of a batch are taken together, so n times the handler's
// longest run should stay below the lease ([consumer.WithLease]). Default:
// [DefaultMaxBatch]; 1 processes and commits one record at a time.
func WithMaxBatch(n int) consumer.Option {
	return consumer.TransportOption("kafkasub.WithMaxBatch", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.maxBatch = n
		return nil
	})
}

// Offset says where a consumer group that has no committed offset starts.
type Offset int

const (
	// FirstOffset starts a new group at the oldest record (the default), so
	// a new consumer also processes what was published before it started.
	FirstOffset Offset = iota
	// LastOffset starts a new group after the newest record.
	LastOffset
)

// WithStartOffset sets where a group with no committed offset starts.
// Default: [FirstOffset]. [WithReaderConfig] can set the same field
// (StartOffset): whichever is given later wins.
func WithStartOffset(o Offset) consumer.Option {
	return consumer.TransportOption("kafkasub.WithStartOffset", func(c *config) error {
		switch o {
		case FirstOffset:
			c.rc.StartOffset = kafkago.FirstOffset
		case LastOffset:
			c.rc.StartOffset = kafkago.LastOffset
		default:
			return fmt.Errorf("unknown offset %d", o)
		}
		return nil
	})
}

// WithSessionTimeout sets how long the group waits for a member that
// stopped sending heartbeats before it hands the member's partitions to
// others. Default: 6 s (the broker's group.min.session.timeout.ms by
// default). [WithReaderConfig] can set the same field (SessionTimeout):
// whichever is given later wins.
func WithSessionTimeout(d time.Duration) consumer.Option {
	return consumer.TransportOption("kafkasub.WithSessionTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%v <= 0", d)
		}
		c.rc.SessionTimeout = d
		return nil
	})
}

// WithDeadLetterTopic writes dead letters to topic on the consumed
// cluster, with the consumer's own writer (see [WithDeadLetterWriter] for
// its settings). Default: the consumed topic followed by
// [consumer.DeadLetterSuffix]. It conflicts with [WithDeadLetterWriter],
// whose writer names its own topic: giving both is an error from New.
// Given twice, the last topic wins.
func WithDeadLetterTopic(topic string) consumer.Option {
	return consumer.TransportOption("kafkasub.WithDeadLetterTopic", func(c *config) error {
		if topic == "" {
			return errors.New("empty topic")
		}
		if c.dl != nil {
			return errors.New("conflicts with kafkasub.WithDeadLetterWriter (the writer names the topic)")
		}
		c.dlTopic = topic
		return nil
	})
}

// WithDeadLetterWriter is an escape hatch: dead letters go to w, a kafka-go
// writer the caller configures (another cluster, its own transport). Its
// Topic must be set and it should require all acks; the consumer does not
// close it. Default: a writer of the consumer's own to the dead-letter
// topic ([WithDeadLetterTopic]) on the consumed cluster, through the
// reader's TLS and SASL settings ([WithTLS], [WithSASL], the Dialer of
// [WithReaderConfig]), requiring all acks and compressing with gzip. It
// conflicts with [WithDeadLetterTopic]: giving both is an error from New.
// With WithTLS or WithSASL, w must have a Transport (an error from New
// otherwise): those options do not reach it. Given twice, the last writer
// wins.
func WithDeadLetterWriter(w *kafkago.Writer) consumer.Option {
	return consumer.TransportOption("kafkasub.WithDeadLetterWriter", func(c *config) error {
		if w == nil || w.Topic == "" {
			return errors.New("the writer needs a Topic")
		}
		if c.dlTopic != "" {
			return errors.New("conflicts with kafkasub.WithDeadLetterTopic (set the writer's Topic instead)")
		}
		c.dl = w
		return nil
	})
}

// WithTLS connects to the brokers with TLS configured by cfg (which must
// not be changed afterwards): RootCAs to trust a private CA, Certificates
// for a client certificate. It reaches every connection the consumer makes
// to the cluster: the consumer group's, the partition readers', the
// default dead-letter writer's and [Consumer.Ping]'s. A broker certificate
// that cfg does not trust ends [Consumer.Run] with an error, and fails
// Ping, at once. Default: plain TCP.
//
// It is set on the reader's Dialer: a Dialer that [WithReaderConfig]
// gives (for its Resolver, DialFunc, ClientID, ...) gets cfg as its TLS,
// and one that has a TLS config of its own conflicts with this option (an
// error from New). It does not reach the writer of [WithDeadLetterWriter],
// which talks through the Transport it was given; New refuses such a
// writer without a Transport, whose dead letters would otherwise leave a
// secured cluster's records in the clear (give it &kafka.Transport{} to
// mean plain TCP).
func WithTLS(cfg *tls.Config) consumer.Option {
	return consumer.TransportOption("kafkasub.WithTLS", func(c *config) error {
		if cfg == nil {
			return errors.New("nil TLS config")
		}
		c.tls = cfg
		return nil
	})
}

// WithSASL authenticates to the brokers with m, a mechanism from kafka-go's
// sasl/plain or sasl/scram packages. Use it with [WithTLS] unless the
// network is trusted: PLAIN sends the password as is. It reaches every
// connection the consumer makes to the cluster, as WithTLS does.
// Credentials the broker refuses end [Consumer.Run] with an error, and
// fail Ping, at once, with an error wrapping kafka-go's
// SASLAuthenticationFailed that does not show the password. Default: no
// authentication.
//
// It is set on the reader's Dialer (SASLMechanism): a Dialer that
// [WithReaderConfig] gives gets m, and one that has a mechanism of its own
// conflicts with this option (an error from New). Like WithTLS, it does
// not reach the writer of [WithDeadLetterWriter], which New refuses
// without a Transport.
func WithSASL(m sasl.Mechanism) consumer.Option {
	return consumer.TransportOption("kafkasub.WithSASL", func(c *config) error {
		if m == nil {
			return errors.New("nil mechanism")
		}
		c.sasl = m
		return nil
	})
}

// WithReaderConfig is an escape hatch: f may change the kafka-go
// ReaderConfig the consumer reads with (its Dialer, fetch sizes, timers;
// [WithTLS] and [WithSASL] set TLS and SASL without it). Its group
// settings (Dialer, timeouts, balancers, StartOffset, RetentionTime)
// configure the consumer group, its fetch settings (MinBytes, MaxBytes,
// MaxWait, ReadBackoffMin/Max, IsolationLevel, ...) the reader of each
// assigned partition. New validates
// the result: Brokers, Topic and GroupID must stay as given to New,
// GroupTopics and Partition must stay unset, and CommitInterval must stay
// 0 (offsets are committed synchronously, only after a record is done);
// anything else is an error from New. Default: the ReaderConfig that [New]
// describes. f sees what the options before it set: [WithStartOffset] and
// [WithSessionTimeout] set fields of the same ReaderConfig, and whichever
// of them and f comes later wins. Given several times, each f sees the
// previous ones' changes.
func WithReaderConfig(f func(*kafkago.ReaderConfig)) consumer.Option {
	return consumer.TransportOption("kafkasub.WithReaderConfig", func(c *config) error {
		if f == nil {
			return errors.New("nil function")
		}
		f(&c.rc)
		return nil
	})
}

// Consumer runs a handler for every record of a topic in a consumer group.
// Create it with [New]; Run may be called again after it returned (each Run
// is a new group member), but not concurrently with itself. Ping may be
// called at any time.
type Consumer struct {
	cfg  config
	set  consumer.Settings
	proc *consumer.Processor
}

// New returns a consumer that reads topic as a member of group from the
// cluster reachable at brokers (host:port bootstrap addresses), and passes
// each record to h wrapped in the standard chain of opts
// ([consumer.NewHandler]: lineage, deduplication with [consumer.WithDedupe],
// timeout, recovery). New does no I/O; [Consumer.Ping] checks the cluster
// and the topic at once.
//
// The group and partition readers use timers sized for low latency instead
// of kafka-go's defaults (which make joining a group and the first fetch
// take many seconds): MaxWait 50ms, HeartbeatInterval 100ms, SessionTimeout
// 6s, RebalanceTimeout 2s, JoinGroupBackoff 100ms, ReadBackoffMin 10ms,
// ReadBackoffMax 50ms, PartitionWatchInterval 100ms.
func New(brokers []string, topic, group string, h consumer.Handler, opts ...consumer.Option) (*Consumer, error) {
	switch {
	case len(brokers) == 0:
		return nil, errors.New("kafkasub: no brokers")
	case topic == "":
		return nil, errors.New("kafkasub: empty topic")
	case group == "":
		return nil, errors.New("kafkasub: empty group")
	}
	cfg := config{parallel: 1, maxBatch: DefaultMaxBatch, rc: kafkago.ReaderConfig{
		Brokers: slices.Clone(brokers), Topic: topic, GroupID: group, StartOffset: kafkago.FirstOffset,
		MaxWait: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond, ReadBackoffMin: 10 * time.Millisecond,
		ReadBackoffMax: 50 * time.Millisecond, PartitionWatchInterval: 100 * time.Millisecond,
	}}
	set, err := consumer.Apply("kafkasub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := cfg.secure(); err != nil {
		return nil, err
	}
	rc := cfg.rc
	switch {
	case rc.GroupID != group || rc.Topic != topic || len(rc.GroupTopics) > 0 || rc.Partition != 0:
		return nil, errors.New("kafkasub: WithReaderConfig must not change the group, the topic or the partition")
	case rc.CommitInterval != 0:
		return nil, errors.New("kafkasub: WithReaderConfig: CommitInterval must stay 0 (offsets are committed synchronously)")
	case !slices.Equal(rc.Brokers, brokers):
		return nil, errors.New("kafkasub: WithReaderConfig must not change Brokers (give them to New)")
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("kafkasub: reader config: %w", err)
	}
	gc := cfg.groupConfig()
	if err := gc.Validate(); err != nil {
		return nil, fmt.Errorf("kafkasub: reader config: %w", err)
	}
	if cfg.dlTopic == "" {
		cfg.dlTopic = topic + consumer.DeadLetterSuffix
	}
	chain, err := set.Chain(h)
	if err != nil {
		return nil, err
	}
	return &Consumer{cfg: cfg, set: set, proc: set.Processor(chain)}, nil
}

// secure puts the settings of WithTLS and WithSASL in the reader's Dialer
// (a copy of the one WithReaderConfig gave, or of kafka-go's default), so
// that every connection gets them, and checks their conflicts. The SASL
// mechanism, with its password, then stays behind the Dialer pointer: no
// formatting of the consumer reaches it.
func (c *config) secure() error {
	if c.tls == nil && c.sasl == nil {
		return nil
	}
	d := *kafkago.DefaultDialer
	if c.rc.Dialer != nil {
		d = *c.rc.Dialer
	}
	switch {
	case c.tls != nil && d.TLS != nil:
		return errors.New("kafkasub: kafkasub.WithTLS conflicts with the TLS config of the Dialer kafkasub.WithReaderConfig set (keep one)")
	case c.sasl != nil && d.SASLMechanism != nil:
		return errors.New("kafkasub: kafkasub.WithSASL conflicts with the SASL mechanism of the Dialer kafkasub.WithReaderConfig set (keep one)")
	case c.dl != nil && c.dl.Transport == nil:
		return errors.New("kafkasub: kafkasub.WithDeadLetterWriter: the writer has no Transport, and kafkasub.WithTLS and kafkasub.WithSASL do not reach it " +
			"(give it a Transport with its own TLS and SASL settings, or &kafka.Transport{} for plain TCP)")
	}
	if c.tls != nil {
		d.TLS = c.tls
	}
	if c.sasl != nil {
		d.SASLMechanism = c.sasl
	}
	c.rc.Dialer, c.tls, c.sasl = &d, nil, nil
	return nil
}

// String describes c by its topic, group and brokers; no credential (a
// SASL mechanism's password, a TLS key) ever appears.
func (c *Consumer) String() string {
	if c == nil {
		return "kafkasub.Consumer(nil)"
	}
	return "kafkasub.Consumer(" + c.cfg.rc.Topic + " in group " + c.cfg.rc.GroupID + " on " + strings.Join(c.cfg.rc.Brokers, ",") + ")"
}

// Format prints [Consumer.String] for every verb (%v, %+v, %#v, %s, ...),
// so that no formatting of a Consumer reaches its configuration.
func (c *Consumer) Format(f fmt.State, verb rune) {
	s := c.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// groupConfig is the consumer-group part of the reader config.
func (c *config) groupConfig() kafkago.ConsumerGroupConfig {
	rc := c.rc
	gc := kafkago.ConsumerGroupConfig{
		ID: rc.GroupID, Brokers: rc.Brokers, Dialer: rc.Dialer, Topics: []string{rc.Topic},
		GroupBalancers: rc.GroupBalancers, HeartbeatInterval: rc.HeartbeatInterval,
		PartitionWatchInterval: rc.PartitionWatchInterval, WatchPartitionChanges: rc.WatchPartitionChanges,
		SessionTimeout: rc.SessionTimeout, RebalanceTimeout: rc.RebalanceTimeout,
		JoinGroupBackoff: rc.JoinGroupBackoff, RetentionTime: rc.RetentionTime, StartOffset: rc.StartOffset,
		Logger: rc.Logger, ErrorLogger: rc.ErrorLogger,
	}
	return gc
}

// partitionConfig is the reader config of one assigned partition: the
// fetch settings of the escape hatch, without the group.
func (c *config) partitionConfig(partition int) kafkago.ReaderConfig {
	rc := c.rc
	rc.GroupID, rc.GroupTopics, rc.GroupBalancers, rc.Partition = "", nil, nil, partition
	rc.ReadLagInterval = -1
	return rc
}

// generation is what the partitions of one group generation share.
type generation struct {
	gen *kafkago.Generation
	mu  sync.Mutex // one commit at a time on the coordinator connection
}

// commit commits offset for partition in this generation. The coordinator
// refuses it once the generation is over, so a member never commits a
// partition it no longer owns.
func (g *generation) commit(topic string, partition int, offset int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen.CommitOffsets(map[string]map[int]int64{topic: {partition: offset}})
}

// Run consumes until ctx is done. It joins the group and, for each
// generation of the group, reads each partition assigned to this member in
// order. It takes the records of a partition that are already fetched as a
// batch (up to [WithMaxBatch]), runs the handler for each in order
// (retrying a failing record in place without moving past it), writes the
// dead letter of each record whose outcome that is, and then commits the
// batch's offsets synchronously, once, in the generation the records were
// read in: nothing is committed before its completion is stored (or its
// inbox transaction committed) and its dead letter written.
//
// When the group rebalances, the member stops reading, starts no new
// record and waits between attempts no more, lets the handler calls in
// progress finish and commit, and only then rejoins. A commit the
// coordinator refuses because the generation ended meanwhile (the member
// took longer than the rebalance timeout, so its partitions went to
// others) is not retried: the records are delivered again to the
// partition's new owner, and the group's committed offset never moves back.
//
// On shutdown it stops fetching, lets the records in progress finish and
// commit (for up to the shutdown timeout), leaves the group and returns
// nil; records not finished, and those behind them, are not committed and
// come back to the group. Failing to join the group (an unreachable
// cluster, a missing topic) is logged and retried until ctx ends;
// [Consumer.Ping] reports it at once. Refused authentication (credentials
// the broker refuses, a broker certificate the client does not trust) is
// not retried: Run returns an error saying so (without the password).
func (c *Consumer) Run(ctx context.Context) error {
	cg, err := kafkago.NewConsumerGroup(c.cfg.groupConfig())
	if err != nil {
		return fmt.Errorf("kafkasub: consumer group: %w", err)
	}
	dl := c.cfg.dl
	if dl == nil {
		dl = &kafkago.Writer{
			Addr: kafkago.TCP(c.cfg.rc.Brokers...), Topic: c.cfg.dlTopic,
			RequiredAcks: kafkago.RequireAll, AllowAutoTopicCreation: true,
			BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{},
			MaxAttempts: 1, BatchBytes: dlBatchBytes, Compression: kafkago.Gzip,
		}
		if t := c.cfg.transport(); t != nil {
			dl.Transport = t
		}
		defer dl.Close()
	}

	// work outlives ctx by the shutdown timeout; the group closes (after
	// the partitions' handlers returned) before work is cancelled.
	shutdown, work, release := consumer.ShutdownContexts(ctx, c.set.ShutdownTimeout)
	defer release()
	defer cg.Close()

	sem := make(chan struct{}, c.cfg.parallel)
	joinErrs := 0
	for {
		gen, err := cg.Next(shutdown)
		if err != nil {
			if shutdown.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				return nil
			}
			if kafkaauth.Refused(err) {
				return fmt.Errorf("kafkasub: joining the consumer group %s: %w", c.cfg.rc.GroupID, err)
			}
			level := slog.LevelWarn
			if errors.Is(err, kafkago.UnknownMemberId) || errors.Is(err, kafkago.RebalanceInProgress) || errors.Is(err, kafkago.IllegalGeneration) {
				level = slog.LevelInfo // the group moved on without this member: it joins again
			}
			if joinErrs++; joinErrs == 1 || joinErrs%100 == 0 {
				c.set.Logger.Log(shutdown, level, "kafkasub: joining the consumer group failed; retrying",
					"group", c.cfg.rc.GroupID, "topic", c.cfg.rc.Topic, "failures", joinErrs, "error", err)
			}
			continue
		}
		joinErrs = 0
		g := &generation{gen: gen}
		for _, pa := range gen.Assignments[c.cfg.rc.Topic] {
			gen.Start(func(genCtx context.Context) { c.consume(genCtx, shutdown, work, g, pa, dl, sem) })
		}
	}
}

// consume reads and handles one assigned partition until the generation
// or the consumer ends.
func (c *Consumer) consume(genCtx, shutdown, work context.Context, g *generation, pa kafkago.PartitionAssignment, dl *kafkago.Writer, sem chan struct{}) {
	// stop ends fetching and the waits between attempts, at shutdown and
	// when the generation ends.
	stop, cancel := context.WithCancel(shutdown)
	defer cancel()
	defer context.AfterFunc(genCtx, cancel)()

	log := c.set.Logger.With("topic", c.cfg.rc.Topic, "partition", pa.ID)
	r := kafkago.NewReader(c.cfg.partitionConfig(pa.ID))
	defer r.Close()
	if err := r.SetOffset(pa.Offset); err != nil {
		log.ErrorContext(stop, "kafkasub: cannot start reading the partition", "offset", pa.Offset, "error", err)
		return
	}
	// The fetching goroutine keeps up to a batch of records ready, so that
	// the records fetched while a batch is processed form the next one.
	recs := make(chan kafkago.Message, c.cfg.maxBatch)
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		c.fetch(stop, r, recs, log)
	}()
	defer func() { cancel(); <-fetched }() // before the reader closes

	b := newBatch(c.cfg.maxBatch)
	for {
		var rec kafkago.Message
		select {
		case rec = <-recs:
		case <-stop.Done():
			return
		}
		select {
		case sem <- struct{}{}:
		case <-stop.Done():
			return
		}
		b.recs = append(b.recs[:0], rec)
	more:
		for len(b.recs) < c.cfg.maxBatch {
			select {
			case rec := <-recs:
				b.recs = append(b.recs, rec)
			default:
				break more
			}
		}
		ok := stop.Err() == nil && c.handle(stop, work, g, dl, b) // fetched as we stopped: leave it
		<-sem
		if !ok {
			return
		}
	}
}

// fetch sends the records of r to recs until stop is done, retrying failed
// fetches with the consumer's backoff.
func (c *Consumer) fetch(stop context.Context, r *kafkago.Reader, recs chan<- kafkago.Message, log *slog.Logger) {
	var bo backoff.BackOff
	for {
		rec, err := r.FetchMessage(stop)
		if err != nil {
			if stop.Err() != nil {
				return
			}
			log.WarnContext(stop, "kafkasub: fetch failed; retrying", "error", err)
			if bo == nil {
				bo = c.proc.Backoff()
			}
			if !sleep(stop, bo.NextBackOff()) {
				return
			}
			continue
		}
		bo = nil
		select {
		case recs <- rec:
		case <-stop.Done():
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// batch is the records of one partition processed together, in offset
// order, and what became of each; its slices are reused.
type batch struct {
	recs []kafkago.Message
	ms   []*consumer.Message
	ctxs []context.Context
	outs []consumer.Outcome // 0: not processed yet
	errs []error
}

func newBatch(n int) *batch {
	return &batch{recs: make([]kafkago.Message, 0, n), ms: make([]*consumer.Message, n),
		ctxs: make([]context.Context, n), outs: make([]consumer.Outcome, n), errs: make([]error, n)}
}

// abandon hands back the records from i on.
func (b *batch) abandon(i int, err error) {
	for ; i < len(b.recs); i++ {
		if b.outs[i] != consumer.OutcomeAbandon {
			b.outs[i], b.errs[i] = consumer.OutcomeAbandon, err
		}
	}
}

// handle processes the records of b in order and commits the offset after
// the last one settled; false means a record was abandoned (neither it nor
// anything after it committed) because the consumer is stopping or the
// generation ended.
func (c *Consumer) handle(stop, work context.Context, g *generation, dl *kafkago.Writer, b *batch) bool {
	n := len(b.recs)
	ms, ctxs, outs, errs := b.ms[:n], b.ctxs[:n], b.outs[:n], b.errs[:n]
	clear(outs)
	clear(errs)
	for i := range b.recs {
		m, raw := c.message(&b.recs[i])
		ms[i] = m
		if err := consumer.Identify(m, raw, c.set.Generator, c.set.MissingID); err != nil {
			outs[i], errs[i] = consumer.OutcomeDeadLetter, err // no handler: straight to the dead letter
		}
		ctxs[i] = c.proc.Begin(work, m) // after Identify: an observer sees the IDs
	}
	stopping := fmt.Errorf("kafkasub: %w", context.Canceled)
	settled := -1 // the last record acknowledged or dead-lettered
	for i := 0; i < n; {
		if i > 0 && stop.Err() != nil { // no new record starts once stopping
			b.abandon(i, stopping)
			break
		}
		if outs[i] == 0 {
			// The stretch of identified records from i, processed together;
			// it ends early at a dead letter, which is then written before
			// any later record runs.
			j := i + 1
			for j < n && outs[j] == 0 {
				j++
			}
			o, e := c.proc.ProcessBatch(stop, work, ctxs[i:j], ms[i:j])
			copy(outs[i:], o)
			copy(errs[i:], e)
			for range len(o) - 1 {
				if outs[i] != consumer.OutcomeAck {
					break
				}
				settled, i = i, i+1
			}
		}
		if outs[i] == consumer.OutcomeAbandon {
			b.abandon(i+1, stopping)
			break
		}
		if outs[i] == consumer.OutcomeDeadLetter {
			log := c.set.Logger.With("topic", b.recs[i].Topic, "partition", b.recs[i].Partition,
				"offset", b.recs[i].Offset, consumer.LogKeyMessageID, ms[i].ID.String())
			if derr := c.deadLetter(stop, work, dl, b.recs[i], ms[i], errs[i], log); derr != nil {
				log.WarnContext(work, "kafkasub: dead letter not written, record not committed", "error", derr)
				outs[i], errs[i] = consumer.OutcomeAbandon, derr
				b.abandon(i+1, stopping)
				break
			}
		}
		settled, i = i, i+1
	}
	if settled >= 0 {
		last := b.recs[settled]
		if c.cfg.onCommit != nil {
			c.cfg.onCommit(last.Partition, last.Offset+1)
		}
		if cerr := g.commit(last.Topic, last.Partition, last.Offset+1); cerr != nil {
			// Not committed: the records come back (to this member or the
			// partition's new owner) and dedupe answers duplicate.
			c.set.Logger.WarnContext(work, "kafkasub: commit refused or failed; the records will be delivered again",
				"topic", last.Topic, "partition", last.Partition, "offset", last.Offset+1, "records", settled+1, "error", cerr)
		}
	}
	for i := range n {
		c.proc.End(ctxs[i], ms[i], outs[i], errs[i])
		ms[i], ctxs[i], errs[i] = nil, nil, nil
	}
	clear(b.recs) // let the records' bytes go
	return settled == n-1
}

// message returns the consumer.Message of rec and its raw IDs.
func (c *Consumer) message(rec *kafkago.Message) (*consumer.Message, consumer.Identity) {
	m := &consumer.Message{
		Key: rec.Key, Body: rec.Value, System: "kafka", Source: rec.Topic,
		Partition: rec.Partition, Offset: rec.Offset, Time: rec.Time,
	}
	var raw consumer.Identity
	for _, h := range rec.Headers {
		switch h.Key {
		case lineage.HeaderMessageType:
			m.Type = string(h.Value)
		case lineage.HeaderMessageID:
			raw.MessageID = string(h.Value)
		case lineage.HeaderCorrelationID:
			raw.CorrelationID = string(h.Value)
		case lineage.HeaderCausationID:
			raw.CausationID = string(h.Value)
		default:
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(rec.Headers))
			}
			m.Headers[h.Key] = string(h.Value)
		}
	}
	return m, raw
}

// transport returns a kafka-go transport with the TLS and SASL settings of
// the reader's dialer, nil when it has none.
func (c *config) transport() *kafkago.Transport {
	d := c.rc.Dialer
	if d == nil || (d.TLS == nil && d.SASLMechanism == nil && d.ClientID == "") {
		return nil
	}
	return &kafkago.Transport{TLS: d.TLS, SASL: d.SASLMechanism, ClientID: d.ClientID}
}

// ErrUnknownTopic is returned by [Consumer.Ping] for a topic the cluster
// does not have.
var ErrUnknownTopic = errors.New("kafkasub: unknown topic")

// Ping checks, on a connection of its own, that the cluster answers and
// that the topic exists, so that a service can fail fast at start-up. It
// returns an error naming the brokers when none answers before ctx ends
// (10 s when ctx has no deadline), and one wrapping [ErrUnknownTopic] when
// the topic is missing. It neither joins the group nor creates the topic.
func (c *Consumer) Ping(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	t := c.cfg.transport()
	if t == nil {
		t = &kafkago.Transport{}
	}
	defer t.CloseIdleConnections()
	brokers, topic := strings.Join(c.cfg.rc.Brokers, ","), c.cfg.rc.Topic
	client := &kafkago.Client{Addr: kafkago.TCP(c.cfg.rc.Brokers...), Transport: t}
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("kafkasub: ping %s: %w", brokers, err)
	}
	for _, tm := range meta.Topics {
		if tm.Name != topic {
			continue
		}
		switch {
		case errors.Is(tm.Error, kafkago.UnknownTopicOrPartition):
			return fmt.Errorf("%w %q on %s", ErrUnknownTopic, topic, brokers)
		case tm.Error != nil:
			return fmt.Errorf("kafkasub: ping %s: topic %q: %w", brokers, topic, tm.Error)
		}
		return nil
	}
	return fmt.Errorf("%w %q on %s", ErrUnknownTopic, topic, brokers)
}
