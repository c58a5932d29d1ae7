package kafkapub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/internal/retry"
)

// Publisher writes messages to one Kafka topic, stamped with their IDs in
// record headers, with the business key as record key.
//
// Publish writes a single record at once (it never waits for a batch to
// fill); PublishBatch lets kafka-go group records per partition. Both
// return once the broker acknowledged every record (all in-sync replicas by
// default) and retry failed records with back-off until the context ends.
//
// kafka-go has no idempotent producer: a retried write whose first attempt
// did reach the broker lands twice. That is safe here because both copies
// carry the same message ID and consumers deduplicate by it. Likewise a
// publish that fails because its context ended may still be written by
// kafka-go in the background: publishing is at-least-once.
//
// A Publisher is safe for concurrent use. Concurrent Publish calls are not
// merged into one request: each partition has one produce request in flight
// at a time, so for throughput use PublishBatch.
type Publisher struct {
	gen    *forge.Generator
	cfg    config
	set    publisher.Settings
	topic  string
	single *kafkago.Writer // BatchSize 1: writes immediately
	batch  *kafkago.Writer

	mu      sync.Mutex
	closed  bool
	active  sync.WaitGroup
	retries atomic.Int64
}

// New returns a publisher writing to topic on the cluster reachable at
// brokers (host:port bootstrap addresses), deriving IDs with gen. It does no
// I/O: connections are made on first publish.
func New(brokers []string, topic string, gen *forge.Generator, opts ...publisher.Option) (*Publisher, error) {
	switch {
	case len(brokers) == 0:
		return nil, errors.New("kafkapub: no brokers")
	case topic == "":
		return nil, errors.New("kafkapub: empty topic")
	case gen == nil:
		return nil, errors.New("kafkapub: nil generator")
	}
	cfg := defaultConfig()
	set, err := publisher.Apply("kafkapub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if set.MaxBodySize == 0 {
		set.MaxBodySize = DefaultMaxBodySize
	}
	w := func(size int, timeout time.Duration) *kafkago.Writer {
		return &kafkago.Writer{
			Addr:                   kafkago.TCP(brokers...),
			Topic:                  topic,
			Balancer:               cfg.balancer,
			MaxAttempts:            1, // retries are ours, with back-off and the context
			BatchSize:              size,
			BatchBytes:             int64(set.MaxBodySize) + 1<<16,
			BatchTimeout:           timeout,
			WriteTimeout:           cfg.writeTimeout,
			RequiredAcks:           cfg.acks,
			AllowAutoTopicCreation: cfg.autoCreate,
			Transport:              cfg.transport,
		}
	}
	return &Publisher{
		gen:    gen,
		cfg:    cfg,
		set:    set,
		topic:  topic,
		single: w(1, cfg.batchTimeout),
		batch:  w(cfg.batchSize, cfg.batchTimeout),
	}, nil
}

func (p *Publisher) prepare(ctx context.Context, msg *publisher.Message, now time.Time) (kafkago.Message, uuid.UUID, error) {
	if msg.RoutingKey != "" {
		return kafkago.Message{}, uuid.Nil, fmt.Errorf("kafkapub: %w", publisher.Invalid(msg.Type, "a routing key has no meaning on Kafka (the topic is the publisher's, the record key is Key)"))
	}
	l, err := publisher.Stamp(ctx, p.gen, msg, p.set.MaxBodySize)
	if err != nil {
		return kafkago.Message{}, uuid.Nil, fmt.Errorf("kafkapub: %w", err)
	}
	key, err := publisher.KeyBytes(msg.Key)
	if err != nil {
		return kafkago.Message{}, uuid.Nil, fmt.Errorf("kafkapub: %w", publisher.Invalid(msg.Type, "record key: %v", err))
	}
	n := 3 + len(msg.Headers)
	if l.CausationID != uuid.Nil {
		n++
	}
	// One allocation for the ID header values.
	buf := make([]byte, 3*36+len(msg.Type))
	hexUUID(buf[0:36], l.MessageID)
	hexUUID(buf[36:72], l.CorrelationID)
	copy(buf[108:], msg.Type)
	h := make([]kafkago.Header, 0, n)
	h = append(h,
		kafkago.Header{Key: lineage.HeaderMessageID, Value: buf[0:36:36]},
		kafkago.Header{Key: lineage.HeaderCorrelationID, Value: buf[36:72:72]},
		kafkago.Header{Key: lineage.HeaderMessageType, Value: buf[108:]})
	if l.CausationID != uuid.Nil {
		hexUUID(buf[72:108], l.CausationID)
		h = append(h, kafkago.Header{Key: lineage.HeaderCausationID, Value: buf[72:108:108]})
	}
	for k, v := range msg.Headers {
		h = append(h, kafkago.Header{Key: k, Value: []byte(v)})
	}
	return kafkago.Message{Key: key, Value: msg.Body, Headers: h, Time: now}, l.MessageID, nil
}

func hexUUID(dst []byte, u uuid.UUID) {
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}

func (p *Publisher) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("kafkapub: %w", publisher.ErrClosed)
	}
	p.active.Add(1)
	return nil
}

// Publish stamps msg with its IDs (see [publisher.IDs]) and writes it as one
// record, returning once the broker acknowledged it. Bad input returns an
// error wrapping [publisher.ErrInvalid] and nothing is sent; a write that
// keeps failing until ctx ends returns a [*publisher.PublishError] with the
// number of attempts and the last cause.
func (p *Publisher) Publish(ctx context.Context, msg publisher.Message) error {
	m, id, err := p.prepare(ctx, &msg, time.Now())
	if err != nil {
		return err
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()
	return retry.Do(ctx, "kafkapub", id, p.set.NewBackOff, permanent, func() { p.retries.Add(1) }, func() error {
		err := p.single.WriteMessages(ctx, m)
		var we kafkago.WriteErrors
		if errors.As(err, &we) && len(we) == 1 {
			err = we[0]
		}
		return err
	})
}

// PublishBatch stamps and writes msgs, letting kafka-go group them per
// partition, and returns once every record was acknowledged. Records that
// failed are written again (the others are not) until ctx ends. If any
// message is invalid nothing is sent and the error wraps
// [publisher.ErrInvalid]; otherwise the error, if any, joins one
// [*publisher.PublishError] per record that could not be written.
func (p *Publisher) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	recs := make([]kafkago.Message, len(msgs))
	ids := make([]uuid.UUID, len(msgs))
	for i := range msgs {
		m, id, err := p.prepare(ctx, &msgs[i], now)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		recs[i], ids[i] = m, id
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()

	todo := make([]int, len(recs))
	for i := range todo {
		todo[i] = i
	}
	var failed []error
	var bo backoff.BackOff
	batch := recs
	for attempt := 1; ; attempt++ {
		err := p.batch.WriteMessages(ctx, batch...)
		if err == nil {
			return errors.Join(failed...)
		}
		var we kafkago.WriteErrors
		if !errors.As(err, &we) || len(we) != len(batch) {
			we = make(kafkago.WriteErrors, len(batch))
			for i := range we {
				we[i] = err
			}
		}
		var next []int
		var lastErr []error
		for j, i := range todo {
			switch e := we[j]; {
			case e == nil:
			case permanent(e):
				failed = append(failed, &publisher.PublishError{Transport: "kafkapub", MessageID: ids[i], Attempts: attempt, Err: e})
			default:
				next = append(next, i)
				lastErr = append(lastErr, e)
			}
		}
		if len(next) == 0 {
			return errors.Join(failed...)
		}
		todo = next
		batch = make([]kafkago.Message, len(todo))
		for j, i := range todo {
			batch[j] = recs[i]
		}
		if bo == nil {
			bo = p.set.NewBackOff()
		}
		p.retries.Add(int64(len(todo)))
		if werr := retry.Wait(ctx, bo); werr != nil {
			for j, i := range todo {
				failed = append(failed, &publisher.PublishError{Transport: "kafkapub", MessageID: ids[i], Attempts: attempt, Err: retry.JoinCtx(werr, lastErr[j])})
			}
			return errors.Join(failed...)
		}
	}
}

// permanent reports errors that writing again cannot fix.
func permanent(err error) bool {
	var tooLarge kafkago.MessageTooLargeError
	var ke kafkago.Error
	switch {
	case errors.As(err, &tooLarge), errors.Is(err, io.ErrClosedPipe):
		return true
	case errors.As(err, &ke):
		return !ke.Temporary()
	}
	return false
}

// Close stops accepting new publishes, waits for those in progress to
// return (each is bounded by its own context) and closes the writers.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.active.Wait()
	return errors.Join(p.single.Close(), p.batch.Close())
}
