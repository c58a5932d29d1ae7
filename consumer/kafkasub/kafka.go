package kafkasub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

// config is this transport's own configuration; the shared one is
// consumer.Settings.
type config struct {
	parallel int
	dl       *kafkago.Writer
	dlTopic  string
	rc       kafkago.ReaderConfig
}

// WithPartitionParallelism handles up to n partitions at once, one goroutine
// per partition, each in order. Default: 1 (one record at a time).
func WithPartitionParallelism(n int) consumer.Option {
	return consumer.TransportOption("kafkasub.WithPartitionParallelism", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.parallel = n
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
// Default: [FirstOffset].
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
// default).
func WithSessionTimeout(d time.Duration) consumer.Option {
	return consumer.TransportOption("kafkasub.WithSessionTimeout", func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%v <= 0", d)
		}
		c.rc.SessionTimeout = d
		return nil
	})
}

// WithDeadLetterTopic writes dead letters to topic on the same cluster.
// Default: the consumed topic followed by [consumer.DeadLetterSuffix].
func WithDeadLetterTopic(topic string) consumer.Option {
	return consumer.TransportOption("kafkasub.WithDeadLetterTopic", func(c *config) error {
		if topic == "" {
			return errors.New("empty topic")
		}
		c.dlTopic, c.dl = topic, nil
		return nil
	})
}

// WithDeadLetterWriter is an escape hatch: dead letters go to w, a kafka-go
// writer the caller configures (another cluster, its own transport). Its
// Topic must be set and it should require all acks; the consumer does not
// close it. It replaces [WithDeadLetterTopic].
func WithDeadLetterWriter(w *kafkago.Writer) consumer.Option {
	return consumer.TransportOption("kafkasub.WithDeadLetterWriter", func(c *config) error {
		if w == nil || w.Topic == "" {
			return errors.New("the writer needs a Topic")
		}
		c.dl = w
		return nil
	})
}

// WithReaderConfig is an escape hatch: f may change the kafka-go
// ReaderConfig the consumer reads with (TLS and SASL through its Dialer,
// fetch sizes, timers). New validates the result: Brokers, Topic and
// GroupID must stay as given to New, GroupTopics and Partition must stay
// unset, and CommitInterval must stay 0 (offsets are committed
// synchronously, only after a record is done).
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
// is a new group member), but not concurrently with itself.
type Consumer struct {
	cfg  config
	set  consumer.Settings
	proc *consumer.Processor
}

// New returns a consumer that reads topic as a member of group from the
// cluster reachable at brokers (host:port bootstrap addresses), and passes
// each record to h wrapped in the standard chain of opts
// ([consumer.NewHandler]: lineage, deduplication with [consumer.WithDedupe],
// timeout, recovery). New does no I/O.
//
// The reader uses timers sized for low latency instead of kafka-go's
// defaults (which make joining a group and the first fetch take many
// seconds): MaxWait 50ms, HeartbeatInterval 100ms, SessionTimeout 6s,
// RebalanceTimeout 2s, JoinGroupBackoff 100ms, ReadBackoffMin 10ms,
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
	cfg := config{parallel: 1, rc: kafkago.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: group, StartOffset: kafkago.FirstOffset,
		MaxWait: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond, ReadBackoffMin: 10 * time.Millisecond,
		ReadBackoffMax: 50 * time.Millisecond, PartitionWatchInterval: 100 * time.Millisecond,
	}}
	set, err := consumer.Apply("kafkasub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	rc := cfg.rc
	switch {
	case rc.GroupID != group || rc.Topic != topic || len(rc.GroupTopics) > 0 || rc.Partition != 0:
		return nil, errors.New("kafkasub: WithReaderConfig must not change the group, the topic or the partition")
	case rc.CommitInterval != 0:
		return nil, errors.New("kafkasub: WithReaderConfig: CommitInterval must stay 0 (offsets are committed synchronously)")
	case len(rc.Brokers) == 0:
		return nil, errors.New("kafkasub: WithReaderConfig emptied Brokers")
	}
	if err := rc.Validate(); err != nil {
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

// Run consumes until ctx is done. For each record it runs the handler
// (retrying in place without moving past the record), dead-letters it when
// that is the outcome (the dead letter must be written before the commit),
// and commits its offset synchronously. On shutdown it stops fetching, lets
// the records in progress finish and commit, and returns nil; records not
// finished are not committed and come back to the group. It returns an
// error when the reader fails for a reason other than ctx.
func (c *Consumer) Run(ctx context.Context) error {
	r := kafkago.NewReader(c.cfg.rc)
	defer r.Close()
	dl := c.cfg.dl
	if dl == nil {
		dl = &kafkago.Writer{
			Addr: kafkago.TCP(c.cfg.rc.Brokers...), Topic: c.cfg.dlTopic,
			RequiredAcks: kafkago.RequireAll, AllowAutoTopicCreation: true,
			BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{},
		}
		if d := c.cfg.rc.Dialer; d != nil && (d.TLS != nil || d.SASLMechanism != nil) {
			dl.Transport = &kafkago.Transport{TLS: d.TLS, SASL: d.SASLMechanism, ClientID: d.ClientID}
		}
		defer dl.Close()
	}

	// stop ends fetching and waiting; it is also cancelled when a record is
	// abandoned, so no later record of its partition is committed past it.
	// work outlives ctx by the shutdown timeout.
	shutdown, work, release := consumer.ShutdownContexts(ctx, c.set.ShutdownTimeout)
	defer release()
	stop, cancelStop := context.WithCancel(shutdown)
	defer cancelStop()

	var (
		wg      sync.WaitGroup
		workers = map[int]chan kafkago.Message{}
		sem     = make(chan struct{}, c.cfg.parallel)
	)
	defer func() {
		for _, ch := range workers {
			close(ch)
		}
		wg.Wait()
	}()
	for {
		rec, err := r.FetchMessage(stop)
		if err != nil {
			if stop.Err() != nil {
				return nil
			}
			return fmt.Errorf("kafkasub: fetch from %s: %w", c.cfg.rc.Topic, err)
		}
		if stop.Err() != nil { // fetched from the buffer as we stopped: leave it
			return nil
		}
		if c.cfg.parallel == 1 {
			if !c.handle(stop, work, r, dl, rec) {
				return nil
			}
			continue
		}
		ch, ok := workers[rec.Partition]
		if !ok {
			ch = make(chan kafkago.Message, 1)
			workers[rec.Partition] = ch
			wg.Add(1)
			go func() {
				defer wg.Done()
				abandoned := false
				for rec := range ch {
					if abandoned || stop.Err() != nil {
						continue // not committed: comes back to the group
					}
					sem <- struct{}{}
					ok := c.handle(stop, work, r, dl, rec)
					<-sem
					if !ok {
						abandoned = true
						cancelStop()
					}
				}
			}()
		}
		select {
		case ch <- rec:
		case <-stop.Done():
			return nil
		}
	}
}

// handle processes one record and commits it; false means it was abandoned
// (not committed) because the consumer is stopping.
func (c *Consumer) handle(stop, work context.Context, r *kafkago.Reader, dl *kafkago.Writer, rec kafkago.Message) bool {
	m := c.message(rec)
	raw := consumer.Identity{}
	for _, h := range rec.Headers {
		switch h.Key {
		case lineage.HeaderMessageID:
			raw.MessageID = string(h.Value)
		case lineage.HeaderCorrelationID:
			raw.CorrelationID = string(h.Value)
		case lineage.HeaderCausationID:
			raw.CausationID = string(h.Value)
		}
	}
	ctx := c.proc.Begin(work, m)
	err := consumer.Identify(m, raw, c.set.Generator, c.set.MissingID)
	outcome := consumer.OutcomeDeadLetter
	if err == nil {
		outcome, err = c.proc.Process(stop, ctx, m)
	}
	log := c.set.Logger.With("topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, consumer.LogKeyMessageID, m.ID.String())
	switch outcome {
	case consumer.OutcomeAbandon:
		c.proc.End(ctx, m, outcome, err)
		return false
	case consumer.OutcomeDeadLetter:
		if derr := c.deadLetter(stop, work, dl, rec, m, err); derr != nil {
			log.WarnContext(work, "kafkasub: dead letter not written, record not committed", "error", derr)
			c.proc.End(ctx, m, consumer.OutcomeAbandon, derr)
			return false
		}
	}
	if cerr := r.CommitMessages(work, rec); cerr != nil {
		// Not committed: the record comes back and dedupe answers
		// duplicate.
		log.WarnContext(work, "kafkasub: commit failed", "error", cerr)
	}
	c.proc.End(ctx, m, outcome, err)
	return true
}

func (c *Consumer) deadLetter(stop, work context.Context, dl *kafkago.Writer, rec kafkago.Message, m *consumer.Message, reason error) error {
	headers := make([]kafkago.Header, 0, len(rec.Headers)+5)
	for _, h := range rec.Headers {
		switch h.Key {
		case consumer.HeaderDeadLetterReason, consumer.HeaderOriginalTopic, consumer.HeaderOriginalPartition, consumer.HeaderOriginalOffset, consumer.HeaderAttempts:
		default:
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kafkago.Header{Key: consumer.HeaderDeadLetterReason, Value: []byte(consumer.Reason(reason))},
		kafkago.Header{Key: consumer.HeaderOriginalTopic, Value: []byte(rec.Topic)},
		kafkago.Header{Key: consumer.HeaderOriginalPartition, Value: []byte(strconv.Itoa(rec.Partition))},
		kafkago.Header{Key: consumer.HeaderOriginalOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		kafkago.Header{Key: consumer.HeaderAttempts, Value: []byte(strconv.Itoa(m.Attempt))},
	)
	out := kafkago.Message{Key: rec.Key, Value: rec.Value, Headers: headers, Time: rec.Time}
	bo := c.proc.Backoff()
	for {
		err := dl.WriteMessages(work, out)
		if err == nil {
			return nil
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-stop.Done():
			t.Stop()
			return fmt.Errorf("kafkasub: dead letter to %s: %w", dl.Topic, err)
		case <-work.Done():
			t.Stop()
			return fmt.Errorf("kafkasub: dead letter to %s: %w", dl.Topic, err)
		case <-t.C:
		}
	}
}

func (c *Consumer) message(rec kafkago.Message) *consumer.Message {
	m := &consumer.Message{
		Key: rec.Key, Body: rec.Value, System: "kafka", Source: rec.Topic,
		Partition: rec.Partition, Offset: rec.Offset, Time: rec.Time,
	}
	for _, h := range rec.Headers {
		switch h.Key {
		case lineage.HeaderMessageType:
			m.Type = string(h.Value)
		case lineage.HeaderMessageID, lineage.HeaderCorrelationID, lineage.HeaderCausationID:
		default:
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(rec.Headers))
			}
			m.Headers[h.Key] = string(h.Value)
		}
	}
	return m
}
