package rabbitsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
)

// Header names and defaults.
const (
	// HeaderDeadLetterReason carries why a message was dead-lettered.
	HeaderDeadLetterReason = "x-dead-letter-reason"
	// HeaderOriginalQueue carries the queue a dead-lettered message came from.
	HeaderOriginalQueue = "x-original-queue"
	// HeaderAttempts carries how many handler attempts a dead-lettered
	// message had.
	HeaderAttempts = "x-attempts"
	// HeaderDeadLetterID is a random ID of one dead-letter publication; it
	// matches a broker return (the dead letter reached no queue) to the
	// publication it belongs to.
	HeaderDeadLetterID = "x-dead-letter-id"

	DefaultPrefetch        = 16
	DefaultWorkers         = 4
	DefaultShutdownTimeout = 30 * time.Second
)

// Dialer opens a connection; the consumer calls it again after a connection
// loss.
type Dialer func(ctx context.Context) (*amqp.Connection, error)

// DialURL returns a Dialer for an AMQP URL.
func DialURL(url string) Dialer {
	return func(context.Context) (*amqp.Connection, error) { return amqp.Dial(url) }
}

// Option configures [New].
type Option func(*config)

type config struct {
	prefetch, workers int
	gen               *forge.Generator
	missing           consumer.MissingIDPolicy
	dlExchange, dlKey string
	dlQueue           bool // dlKey names a queue reached through the default exchange
	dlDeclare         bool // declare that queue (the default dead-letter queue)
	dlReject          bool // reject to the queue's own x-dead-letter-exchange instead
	proc              consumer.Processor
	logger            *slog.Logger
	shutdown          time.Duration
	tag               string
}

// WithPrefetch sets the channel's prefetch count (default [DefaultPrefetch]);
// it must be at least the number of workers.
func WithPrefetch(n int) Option { return func(c *config) { c.prefetch = n } }

// WithWorkers sets how many deliveries are handled at once (default
// [DefaultWorkers]).
func WithWorkers(n int) Option { return func(c *config) { c.workers = n } }

// WithGenerator sets the generator for content IDs (default: forge.New(
// [consumer.DefaultContentNamespace])). All consumers of one queue must use
// the same one.
func WithGenerator(g *forge.Generator) Option { return func(c *config) { c.gen = g } }

// WithMissingID sets what happens to a message without MessageId (default
// [consumer.MissingIDContent]).
func WithMissingID(p consumer.MissingIDPolicy) Option { return func(c *config) { c.missing = p } }

// WithDeadLetterExchange publishes dead letters to exchange with routing key
// key, in confirm mode, with the reason in [HeaderDeadLetterReason]; the
// original is acked only after the broker confirmed the dead letter. The
// dead letter is published as mandatory: if the exchange routes it to no
// queue, the broker returns it, the original is not acked and goes back to
// its queue, and the error is logged. The last of WithDeadLetterExchange,
// [WithDeadLetterQueue] and [WithQueueDeadLetterExchange] wins. Default: the
// durable queue "<queue>.dead-letter" (see [DeadLetterSuffix]), declared on
// every (re)connect.
func WithDeadLetterExchange(exchange, key string) Option {
	return func(c *config) {
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = exchange, key, false, false, false
	}
}

// WithDeadLetterQueue publishes dead letters straight to queue (through the
// default exchange) like [WithDeadLetterExchange]; the queue must exist,
// which is checked on every (re)connect.
func WithDeadLetterQueue(queue string) Option {
	return func(c *config) {
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = "", queue, true, false, false
	}
}

// WithQueueDeadLetterExchange dead-letters by rejecting the delivery without
// requeue, so that the queue's own x-dead-letter-exchange receives it:
// RabbitMQ adds its x-death header, but the reason header is not added.
// Use it only for queues declared with an x-dead-letter-exchange that routes
// somewhere: for a queue without one, the broker drops rejected messages.
func WithQueueDeadLetterExchange() Option {
	return func(c *config) {
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = "", "", false, false, true
	}
}

// DeadLetterSuffix names the default dead-letter queue: the consumed queue's
// name followed by this suffix.
const DeadLetterSuffix = ".dead-letter"

// WithMaxAttempts sets how many times a failing message is handled before it
// is dead-lettered (default [consumer.DefaultMaxAttempts]). Retries happen
// in place, holding the delivery, with backoff between
// [consumer.DefaultMinBackoff] and [consumer.DefaultMaxBackoff] unless
// [WithBackoff] says otherwise.
func WithMaxAttempts(n int) Option { return func(c *config) { c.proc.MaxAttempts = n } }

// WithBackoff bounds the wait between attempts and between reconnects
// (default [consumer.DefaultMinBackoff] to [consumer.DefaultMaxBackoff]; 0
// keeps a default; min may not exceed max).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.proc.MinBackoff, c.proc.MaxBackoff = min, max }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithShutdownTimeout sets how long in-flight handlers may run after Run's
// context is done before their context is cancelled too (default
// [DefaultShutdownTimeout]). Cancelled work is not acked.
func WithShutdownTimeout(d time.Duration) Option { return func(c *config) { c.shutdown = d } }

// WithConsumerTag sets the consumer tag (default: chosen by the server).
func WithConsumerTag(tag string) Option { return func(c *config) { c.tag = tag } }

// Consumer runs a handler for every message of one queue. Create it with
// [New]; Run it once. Safe for concurrent use only in that Run may be
// called from any goroutine.
type Consumer struct {
	dial  Dialer
	queue string
	cfg   config
}

// New returns a consumer of queue that passes each delivery to h (usually a
// [consumer.Chain] that includes [consumer.Dedupe]).
func New(dial Dialer, queue string, h consumer.Handler, opts ...Option) (*Consumer, error) {
	if dial == nil || h == nil || queue == "" {
		return nil, errors.New("rabbitsub: New needs a dialer, a queue and a handler")
	}
	cfg := config{prefetch: DefaultPrefetch, workers: DefaultWorkers, shutdown: DefaultShutdownTimeout,
		dlKey: queue + DeadLetterSuffix, dlQueue: true, dlDeclare: true}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.proc.Handler = h
	switch {
	case cfg.workers < 1:
		return nil, fmt.Errorf("rabbitsub: %d workers", cfg.workers)
	case cfg.prefetch < cfg.workers:
		return nil, fmt.Errorf("rabbitsub: prefetch %d below workers %d", cfg.prefetch, cfg.workers)
	case cfg.proc.MaxAttempts < 0:
		return nil, fmt.Errorf("rabbitsub: max attempts %d", cfg.proc.MaxAttempts)
	case cfg.proc.MinBackoff < 0 || cfg.proc.MaxBackoff < 0 || (cfg.proc.MaxBackoff > 0 && cfg.proc.MinBackoff > cfg.proc.MaxBackoff):
		return nil, fmt.Errorf("rabbitsub: backoff between %v and %v", cfg.proc.MinBackoff, cfg.proc.MaxBackoff)
	case cfg.shutdown < 0:
		return nil, fmt.Errorf("rabbitsub: shutdown timeout %v", cfg.shutdown)
	case cfg.missing != consumer.MissingIDContent && cfg.missing != consumer.MissingIDDeadLetter:
		return nil, fmt.Errorf("rabbitsub: missing-ID policy %d", cfg.missing)
	}
	if cfg.gen == nil {
		g, err := forge.New(consumer.DefaultContentNamespace)
		if err != nil {
			return nil, fmt.Errorf("rabbitsub: content generator: %w", err)
		}
		cfg.gen = g
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	return &Consumer{dial: dial, queue: queue, cfg: cfg}, nil
}

// Run consumes until ctx is done, then shuts down gracefully: it stops
// taking deliveries (prefetched ones that were not started are returned to
// the queue), lets the handlers in progress finish and ack (for at most the
// shutdown timeout), closes its connection and returns nil. A lost
// connection or channel is re-established with backoff; its unacked
// deliveries come back from the broker and dedupe recognises those already
// done. Run returns an error only for a configuration the broker rejects
// at the first connection (e.g. a missing queue).
func (c *Consumer) Run(ctx context.Context) error {
	bo := c.cfg.proc.Backoff()
	first := true
	for {
		conn, err := c.dial(ctx)
		if err == nil {
			var fatal bool
			fatal, err = c.session(ctx, conn)
			_ = conn.Close()
			if ctx.Err() != nil {
				return nil
			}
			if fatal && first {
				return err
			}
			first = false
			bo.Reset()
		}
		c.cfg.logger.WarnContext(ctx, "rabbitsub: connection lost, reconnecting", "queue", c.queue, "error", err)
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session consumes over one connection until ctx is done (nil) or the
// connection or a channel fails. fatal reports a setup error.
func (c *Consumer) session(ctx context.Context, conn *amqp.Connection) (fatal bool, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("rabbitsub: open channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Qos(c.cfg.prefetch, 0, false); err != nil {
		return false, fmt.Errorf("rabbitsub: qos: %w", err)
	}
	var dl *deadLetters
	if !c.cfg.dlReject {
		dlch, err := conn.Channel()
		if err != nil {
			return false, fmt.Errorf("rabbitsub: open dead-letter channel: %w", err)
		}
		defer dlch.Close()
		dl = &deadLetters{ch: dlch, returns: dlch.NotifyReturn(make(chan amqp.Return, 64)), returned: map[string]bool{}}
		if err := dl.ch.Confirm(false); err != nil {
			return false, fmt.Errorf("rabbitsub: dead-letter confirm mode: %w", err)
		}
		if c.cfg.dlDeclare {
			if _, err := dl.ch.QueueDeclare(c.cfg.dlKey, true, false, false, false, nil); err != nil {
				return true, fmt.Errorf("rabbitsub: declare dead-letter queue %q: %w", c.cfg.dlKey, err)
			}
		} else if c.cfg.dlQueue {
			if _, err := dl.ch.QueueDeclarePassive(c.cfg.dlKey, false, false, false, false, nil); err != nil {
				return true, fmt.Errorf("rabbitsub: dead-letter queue %q: %w", c.cfg.dlKey, err)
			}
		}
	}
	tag := c.cfg.tag
	if tag == "" {
		tag = "uuidforge-" + uuid.NewString()
	}
	deliveries, err := ch.Consume(c.queue, tag, false, false, false, false, nil)
	if err != nil {
		return true, fmt.Errorf("rabbitsub: consume %q: %w", c.queue, err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))

	// work outlives ctx by the shutdown timeout, so in-flight handlers finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopWatch := context.AfterFunc(ctx, func() {
		time.AfterFunc(c.cfg.shutdown, cancelWork)
	})
	defer stopWatch()

	// stop ends taking and waiting: on shutdown or when the channel is gone.
	stop, cancelStop := context.WithCancel(ctx)
	defer cancelStop()

	var wg sync.WaitGroup
	for range c.cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop.Done():
					return
				case d, ok := <-deliveries:
					if !ok {
						return
					}
					if stop.Err() != nil { // stop taking: give it back untouched
						_ = d.Nack(false, true)
						return
					}
					c.handle(stop, work, dl, d)
				}
			}
		}()
	}

	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var cause error
	select {
	case <-ctx.Done():
	case <-workersDone: // the delivery channel closed: the broker cancelled us
		cause = errors.New("rabbitsub: consumer cancelled by the broker")
	case e := <-closed:
		cause = fmt.Errorf("rabbitsub: connection closed: %v", e)
	case e := <-chClosed:
		cause = fmt.Errorf("rabbitsub: channel closed: %v", e)
	}
	if ctx.Err() != nil {
		// Stop taking; prefetched deliveries go back to the queue when the
		// channel closes after the workers are done.
		_ = ch.Cancel(tag, false)
	}
	cancelStop()
	<-workersDone
	return false, cause
}

// handle processes one delivery and acks, nacks or dead-letters it.
func (c *Consumer) handle(stop, work context.Context, dl *deadLetters, d amqp.Delivery) {
	m := c.message(d)
	err := consumer.Identify(m, consumer.Identity{
		MessageID:     d.MessageId,
		CorrelationID: d.CorrelationId,
		CausationID:   headerString(d.Headers, lineage.HeaderCausationID),
	}, c.cfg.gen, c.cfg.missing)
	outcome := consumer.OutcomeDeadLetter
	if err == nil {
		outcome, err = c.cfg.proc.Process(stop, work, m)
	}
	log := c.cfg.logger.With("queue", c.queue, consumer.LogKeyMessageID, m.ID.String(), "delivery_tag", d.DeliveryTag)
	switch outcome {
	case consumer.OutcomeAck:
		if aerr := d.Ack(false); aerr != nil {
			// The broker redelivers it; dedupe answers duplicate then.
			log.WarnContext(work, "rabbitsub: ack failed", "error", aerr)
		}
	case consumer.OutcomeAbandon:
		_ = d.Nack(false, true)
	case consumer.OutcomeDeadLetter:
		log.WarnContext(work, "rabbitsub: dead-lettering message", "error", err, "attempt", m.Attempt)
		if dl == nil {
			if nerr := d.Reject(false); nerr != nil {
				log.WarnContext(work, "rabbitsub: reject failed", "error", nerr)
			}
			return
		}
		if perr := c.publishDeadLetter(stop, work, dl, d, m, err); perr != nil {
			log.WarnContext(work, "rabbitsub: dead letter not stored, returning the message", "error", perr)
			_ = d.Nack(false, true)
			return
		}
		if aerr := d.Ack(false); aerr != nil {
			log.WarnContext(work, "rabbitsub: ack after dead letter failed", "error", aerr)
		}
	}
}

// publishDeadLetter publishes a copy of d with the reason and waits for the
// broker's confirm, retrying with backoff until stop is done.
func (c *Consumer) publishDeadLetter(stop, work context.Context, dl *deadLetters, d amqp.Delivery, m *consumer.Message, reason error) error {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[HeaderDeadLetterReason] = reason.Error()
	headers[HeaderOriginalQueue] = c.queue
	headers[HeaderAttempts] = strconv.Itoa(m.Attempt)
	dlID := uuid.NewString()
	headers[HeaderDeadLetterID] = dlID
	pub := amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		UserId: d.UserId, AppId: d.AppId, Body: d.Body,
	}
	bo := c.cfg.proc.Backoff()
	for {
		err := func() error {
			ctx, cancel := context.WithTimeout(work, 10*time.Second)
			defer cancel()
			conf, err := dl.ch.PublishWithDeferredConfirmWithContext(ctx, c.cfg.dlExchange, c.cfg.dlKey, true, false, pub)
			if err != nil {
				return err
			}
			ok, err := conf.WaitContext(ctx)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("broker nacked the dead letter")
			}
			if dl.wasReturned(dlID) {
				return fmt.Errorf("%w: exchange %q routes key %q to no queue", ErrDeadLetterUnroutable, c.cfg.dlExchange, c.cfg.dlKey)
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if dl.ch.IsClosed() {
			return fmt.Errorf("rabbitsub: dead letter: %w", err)
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-stop.Done():
			t.Stop()
			return fmt.Errorf("rabbitsub: dead letter: %w", err)
		case <-t.C:
		}
	}
}

// ErrDeadLetterUnroutable: the broker returned a dead letter because its
// exchange routed it to no queue; the original message is not acked.
var ErrDeadLetterUnroutable = errors.New("rabbitsub: dead letter unroutable")

// deadLetters is the confirm-mode channel dead letters are published on, with
// the broker's returns of unroutable ones. Safe for concurrent use.
type deadLetters struct {
	ch      *amqp.Channel
	returns <-chan amqp.Return

	mu       sync.Mutex
	returned map[string]bool // HeaderDeadLetterID values returned and not yet checked
}

// wasReturned reports whether the publication with the given dead-letter ID
// came back as unroutable. The broker sends basic.return before the
// basic.ack of the same message, and the client hands the return to the
// returns channel before it resolves the confirm, so once the confirm is in,
// a return for it is already buffered there.
func (dl *deadLetters) wasReturned(id string) bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for {
		select {
		case r, ok := <-dl.returns:
			if !ok {
				return dl.take(id)
			}
			if v, ok := r.Headers[HeaderDeadLetterID].(string); ok {
				dl.returned[v] = true
			}
			continue
		default:
		}
		return dl.take(id)
	}
}

func (dl *deadLetters) take(id string) bool {
	if dl.returned[id] {
		delete(dl.returned, id)
		return true
	}
	return false
}

func (c *Consumer) message(d amqp.Delivery) *consumer.Message {
	m := &consumer.Message{
		Type:        d.Type,
		Key:         []byte(d.RoutingKey),
		Body:        d.Body,
		Redelivered: d.Redelivered,
		Source:      c.queue,
		Time:        d.Timestamp,
	}
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k := range d.Headers {
			m.Headers[k] = headerString(d.Headers, k)
		}
	}
	return m
}

func headerString(t amqp.Table, k string) string {
	switch v := t[k].(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}
