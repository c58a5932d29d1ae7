package kafkasub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
)

// Header names and defaults.
const (
	// HeaderDeadLetterReason carries why a record was dead-lettered.
	HeaderDeadLetterReason = "x-dead-letter-reason"
	// HeaderOriginalTopic, HeaderOriginalPartition and HeaderOriginalOffset
	// locate the original of a dead-lettered record.
	HeaderOriginalTopic     = "x-original-topic"
	HeaderOriginalPartition = "x-original-partition"
	HeaderOriginalOffset    = "x-original-offset"
	// HeaderAttempts carries how many handler attempts a dead-lettered
	// record had.
	HeaderAttempts = "x-attempts"

	// DeadLetterSuffix is appended to the topic to name the default dead
	// letter topic.
	DeadLetterSuffix = ".dead-letter"

	DefaultShutdownTimeout = 30 * time.Second
)

// Option configures [New].
type Option func(*config)

type config struct {
	parallel int
	gen      *forge.Generator
	missing  consumer.MissingIDPolicy
	dl       *kafkago.Writer
	proc     consumer.Processor
	logger   *slog.Logger
	shutdown time.Duration
}

// WithPartitionParallelism handles up to n partitions at once, one goroutine
// per partition, each in order (default 1: one record at a time).
func WithPartitionParallelism(n int) Option { return func(c *config) { c.parallel = n } }

// WithGenerator sets the generator for content IDs (default: forge.New(
// [consumer.DefaultContentNamespace])). All members of a group must use the
// same one.
func WithGenerator(g *forge.Generator) Option { return func(c *config) { c.gen = g } }

// WithMissingID sets what happens to a record without a "message-id" header
// (default [consumer.MissingIDContent]).
func WithMissingID(p consumer.MissingIDPolicy) Option { return func(c *config) { c.missing = p } }

// WithDeadLetterWriter sets the writer dead letters go to; its Topic must be
// set, and it should require all acks. The consumer does not close it.
// Default: a writer on the reader's brokers to the topic + [DeadLetterSuffix],
// RequireAll, creating the topic if the cluster allows it.
func WithDeadLetterWriter(w *kafkago.Writer) Option { return func(c *config) { c.dl = w } }

// WithMaxAttempts sets how often a failing record is handled, in place and
// with backoff, before it is dead-lettered (default
// [consumer.DefaultMaxAttempts]).
func WithMaxAttempts(n int) Option { return func(c *config) { c.proc.MaxAttempts = n } }

// WithBackoff bounds the wait between attempts and between dead-letter
// writes (default [consumer.DefaultMinBackoff] to
// [consumer.DefaultMaxBackoff]; 0 keeps a default; min may not exceed max).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.proc.MinBackoff, c.proc.MaxBackoff = min, max }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithShutdownTimeout sets how long in-flight handlers may run after Run's
// context is done before their context is cancelled (default
// [DefaultShutdownTimeout]). Cancelled work is not committed.
func WithShutdownTimeout(d time.Duration) Option { return func(c *config) { c.shutdown = d } }

// Consumer runs a handler for every record of a consumer group. Create it
// with [New]; Run may be called again after it returned (each Run is a new
// group member), but not concurrently with itself.
type Consumer struct {
	rc  kafkago.ReaderConfig
	cfg config
}

// New returns a consumer that reads with a kafka-go Reader built from rc
// and passes each record to h (usually a [consumer.Chain] including
// [consumer.Dedupe]). rc must name a GroupID and one Topic, and must not set
// CommitInterval: offsets are committed synchronously, one processed record
// at a time.
func New(rc kafkago.ReaderConfig, h consumer.Handler, opts ...Option) (*Consumer, error) {
	switch {
	case h == nil:
		return nil, errors.New("kafkasub: nil handler")
	case rc.GroupID == "":
		return nil, errors.New("kafkasub: ReaderConfig.GroupID is required")
	case rc.Topic == "" || len(rc.GroupTopics) > 0:
		return nil, errors.New("kafkasub: ReaderConfig needs exactly one Topic (GroupTopics is not supported)")
	case rc.CommitInterval != 0:
		return nil, errors.New("kafkasub: ReaderConfig.CommitInterval must be 0 (synchronous commits)")
	case len(rc.Brokers) == 0:
		return nil, errors.New("kafkasub: ReaderConfig.Brokers is empty")
	}
	cfg := config{parallel: 1, shutdown: DefaultShutdownTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.proc.Handler = h
	switch {
	case cfg.parallel < 1:
		return nil, fmt.Errorf("kafkasub: partition parallelism %d", cfg.parallel)
	case cfg.proc.MaxAttempts < 0:
		return nil, fmt.Errorf("kafkasub: max attempts %d", cfg.proc.MaxAttempts)
	case cfg.proc.MinBackoff < 0 || cfg.proc.MaxBackoff < 0 || (cfg.proc.MaxBackoff > 0 && cfg.proc.MinBackoff > cfg.proc.MaxBackoff):
		return nil, fmt.Errorf("kafkasub: backoff between %v and %v", cfg.proc.MinBackoff, cfg.proc.MaxBackoff)
	case cfg.shutdown < 0:
		return nil, fmt.Errorf("kafkasub: shutdown timeout %v", cfg.shutdown)
	case cfg.missing != consumer.MissingIDContent && cfg.missing != consumer.MissingIDDeadLetter:
		return nil, fmt.Errorf("kafkasub: missing-ID policy %d", cfg.missing)
	case cfg.dl != nil && cfg.dl.Topic == "":
		return nil, errors.New("kafkasub: the dead-letter writer needs a Topic")
	}
	if cfg.gen == nil {
		g, err := forge.New(consumer.DefaultContentNamespace)
		if err != nil {
			return nil, fmt.Errorf("kafkasub: content generator: %w", err)
		}
		cfg.gen = g
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	return &Consumer{rc: rc, cfg: cfg}, nil
}

// Run consumes until ctx is done. For each record it runs the handler
// (retrying in place without moving past the record), dead-letters it when
// that is the outcome (the dead letter must be written before the commit),
// and commits its offset synchronously. On shutdown it stops fetching, lets
// the records in progress finish and commit, and returns nil; records not
// finished are not committed and come back to the group. It returns an
// error when the reader fails for a reason other than ctx.
func (c *Consumer) Run(ctx context.Context) error {
	r := kafkago.NewReader(c.rc)
	defer r.Close()
	dl := c.cfg.dl
	if dl == nil {
		dl = &kafkago.Writer{
			Addr: kafkago.TCP(c.rc.Brokers...), Topic: c.rc.Topic + DeadLetterSuffix,
			RequiredAcks: kafkago.RequireAll, AllowAutoTopicCreation: true,
			BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{},
		}
		defer dl.Close()
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopWatch := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.shutdown, cancelWork) })
	defer stopWatch()

	// stop ends fetching and waiting; set on shutdown or when a record is
	// abandoned, so no later record of its partition is committed past it.
	stop, cancelStop := context.WithCancel(ctx)
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
			return fmt.Errorf("kafkasub: fetch from %s: %w", c.rc.Topic, err)
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
	err := consumer.Identify(m, raw, c.cfg.gen, c.cfg.missing)
	outcome := consumer.OutcomeDeadLetter
	if err == nil {
		outcome, err = c.cfg.proc.Process(stop, work, m)
	}
	log := c.cfg.logger.With("topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, consumer.LogKeyMessageID, m.ID.String())
	switch outcome {
	case consumer.OutcomeAbandon:
		return false
	case consumer.OutcomeDeadLetter:
		log.WarnContext(work, "kafkasub: dead-lettering record", "error", err, "attempt", m.Attempt)
		if derr := c.deadLetter(stop, work, dl, rec, m, err); derr != nil {
			log.WarnContext(work, "kafkasub: dead letter not written, record not committed", "error", derr)
			return false
		}
	}
	if cerr := r.CommitMessages(work, rec); cerr != nil {
		// Not committed: the record comes back and dedupe answers
		// duplicate.
		log.WarnContext(work, "kafkasub: commit failed", "error", cerr)
	}
	return true
}

func (c *Consumer) deadLetter(stop, work context.Context, dl *kafkago.Writer, rec kafkago.Message, m *consumer.Message, reason error) error {
	headers := make([]kafkago.Header, 0, len(rec.Headers)+5)
	for _, h := range rec.Headers {
		switch h.Key {
		case HeaderDeadLetterReason, HeaderOriginalTopic, HeaderOriginalPartition, HeaderOriginalOffset, HeaderAttempts:
		default:
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kafkago.Header{Key: HeaderDeadLetterReason, Value: []byte(reason.Error())},
		kafkago.Header{Key: HeaderOriginalTopic, Value: []byte(rec.Topic)},
		kafkago.Header{Key: HeaderOriginalPartition, Value: []byte(strconv.Itoa(rec.Partition))},
		kafkago.Header{Key: HeaderOriginalOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		kafkago.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(m.Attempt))},
	)
	out := kafkago.Message{Key: rec.Key, Value: rec.Value, Headers: headers, Time: rec.Time}
	bo := c.cfg.proc.Backoff()
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
		Key: rec.Key, Body: rec.Value, Source: rec.Topic,
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

// ReaderConfig returns a kafka-go ReaderConfig for a consumer group that
// starts new groups at the first offset and uses timers sized for low latency
// instead of kafka-go's defaults (MaxWait 10 s, JoinGroupBackoff 5 s,
// PartitionWatchInterval 5 s), which make joining a group and the first fetch
// take many seconds:
//
//	MaxWait 50ms, HeartbeatInterval 100ms, SessionTimeout 6s,
//	RebalanceTimeout 2s, JoinGroupBackoff 100ms, ReadBackoffMin 10ms,
//	ReadBackoffMax 50ms, PartitionWatchInterval 100ms
//
// Adjust fields on the result as needed (a SessionTimeout below the broker's
// group.min.session.timeout.ms, 6 s by default, is refused by the broker).
func ReaderConfig(brokers []string, topic, group string) kafkago.ReaderConfig {
	return kafkago.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: group, StartOffset: kafkago.FirstOffset,
		MaxWait: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond, ReadBackoffMin: 10 * time.Millisecond,
		ReadBackoffMax: 50 * time.Millisecond, PartitionWatchInterval: 100 * time.Millisecond,
	}
}
