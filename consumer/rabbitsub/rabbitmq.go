package rabbitsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

// Header names and defaults.
const (
	// HeaderDeadLetterID is a random ID of one dead-letter publication; it
	// matches a broker return (the dead letter reached no queue) to the
	// publication it belongs to.
	HeaderDeadLetterID = "x-dead-letter-id"

	// DefaultPrefetch is the channel's prefetch count.
	DefaultPrefetch = 16
	// DefaultWorkers is how many deliveries are handled at once.
	DefaultWorkers = 4
)

// config is this transport's own configuration; the shared one is
// consumer.Settings.
type config struct {
	prefetch, workers int
	dlExchange, dlKey string
	dlQueue           bool // dlKey names a queue reached through the default exchange
	dlDeclare         bool // declare that queue (the default dead-letter queue)
	dlReject          bool // reject to the queue's own x-dead-letter-exchange instead
	tag               string
	amqpConfig        amqp.Config
	dial              func(url string, cfg amqp.Config) (*amqp.Connection, error)
}

// WithPrefetch sets the channel's prefetch count. Default: [DefaultPrefetch];
// it must be at least the number of workers.
func WithPrefetch(n int) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithPrefetch", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.prefetch = n
		return nil
	})
}

// WithWorkers sets how many deliveries are handled at once. Default:
// [DefaultWorkers].
func WithWorkers(n int) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithWorkers", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.workers = n
		return nil
	})
}

// WithDeadLetterExchange publishes dead letters to exchange with routing key
// key, in confirm mode, with the reason in [consumer.HeaderDeadLetterReason];
// the original is acked only after the broker confirmed the dead letter. The
// dead letter is published as mandatory: if the exchange routes it to no
// queue, the broker returns it, the original is not acked and goes back to
// its queue, and the error is logged. The last of WithDeadLetterExchange,
// [WithDeadLetterQueue] and [WithQueueDeadLetterExchange] wins. Default: the
// durable queue "<queue>.dead-letter" ([consumer.DeadLetterSuffix]),
// declared on every (re)connect.
func WithDeadLetterExchange(exchange, key string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDeadLetterExchange", func(c *config) error {
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = exchange, key, false, false, false
		return nil
	})
}

// WithDeadLetterQueue publishes dead letters straight to queue (through the
// default exchange) like [WithDeadLetterExchange]; the queue must exist,
// which is checked on every (re)connect.
func WithDeadLetterQueue(queue string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDeadLetterQueue", func(c *config) error {
		if queue == "" {
			return errors.New("empty queue name")
		}
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = "", queue, true, false, false
		return nil
	})
}

// WithQueueDeadLetterExchange dead-letters by rejecting the delivery without
// requeue, so that the queue's own x-dead-letter-exchange receives it:
// RabbitMQ adds its x-death header, but the reason header is not added.
// Use it only for queues declared with an x-dead-letter-exchange that routes
// somewhere: for a queue without one, the broker drops rejected messages.
func WithQueueDeadLetterExchange() consumer.Option {
	return consumer.TransportOption("rabbitsub.WithQueueDeadLetterExchange", func(c *config) error {
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = "", "", false, false, true
		return nil
	})
}

// WithConsumerTag sets the consumer tag. Default: "uuidforge-" and a random
// UUID.
func WithConsumerTag(tag string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithConsumerTag", func(c *config) error { c.tag = tag; return nil })
}

// WithAMQPConfig sets the connection configuration passed to
// amqp.DialConfig (TLS, heartbeat, connection name...). Default: a 10 s
// heartbeat. Do not set its Recovery field: the consumer reconnects itself.
func WithAMQPConfig(cfg amqp.Config) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithAMQPConfig", func(c *config) error {
		if cfg.Recovery != nil {
			return errors.New("amqp.Config.Recovery must be nil: the consumer recovers connections itself")
		}
		c.amqpConfig = cfg
		return nil
	})
}

// Consumer runs a handler for every message of one queue. Create it with
// [New]; Run it once at a time. Safe for concurrent use only in that Run
// may be called from any goroutine.
type Consumer struct {
	url   string
	queue string
	cfg   config
	set   consumer.Settings
	proc  *consumer.Processor
}

// New returns a consumer of queue on the broker at url (an amqp:// or
// amqps:// URL) that passes each delivery to h wrapped in the standard chain
// of opts ([consumer.NewHandler]: lineage, deduplication with
// [consumer.WithDedupe], timeout, recovery). Options are the shared
// consumer options and this package's own. New does no I/O.
func New(url, queue string, h consumer.Handler, opts ...consumer.Option) (*Consumer, error) {
	if queue == "" {
		return nil, errors.New("rabbitsub: empty queue name")
	}
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("rabbitsub: url: %w", err)
	}
	cfg := config{prefetch: DefaultPrefetch, workers: DefaultWorkers,
		dlKey: queue + consumer.DeadLetterSuffix, dlQueue: true, dlDeclare: true,
		amqpConfig: amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"}, dial: amqp.DialConfig}
	set, err := consumer.Apply("rabbitsub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if cfg.prefetch < cfg.workers {
		return nil, fmt.Errorf("rabbitsub: prefetch %d below workers %d", cfg.prefetch, cfg.workers)
	}
	chain, err := set.Chain(h)
	if err != nil {
		return nil, err
	}
	return &Consumer{url: url, queue: queue, cfg: cfg, set: set, proc: set.Processor(chain)}, nil
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
	bo := c.proc.Backoff()
	first := true
	for {
		conn, err := c.cfg.dial(c.url, c.cfg.amqpConfig)
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
		c.set.Logger.WarnContext(ctx, "rabbitsub: connection lost, reconnecting", "queue", c.queue, "error", err)
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

	// stop ends taking and waiting (on shutdown, or when the channel is
	// gone); work outlives ctx by the shutdown timeout, so in-flight
	// handlers finish.
	shutdown, work, release := consumer.ShutdownContexts(ctx, c.set.ShutdownTimeout)
	defer release()
	stop, cancelStop := context.WithCancel(shutdown)
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
	ctx := c.proc.Begin(work, m)
	err := consumer.Identify(m, consumer.Identity{
		MessageID:     d.MessageId,
		CorrelationID: d.CorrelationId,
		CausationID:   headerString(d.Headers, lineage.HeaderCausationID),
	}, c.set.Generator, c.set.MissingID)
	outcome := consumer.OutcomeDeadLetter
	if err == nil {
		outcome, err = c.proc.Process(stop, ctx, m)
	}
	log := c.set.Logger.With("queue", c.queue, consumer.LogKeyMessageID, m.ID.String(), "delivery_tag", d.DeliveryTag)
	switch outcome {
	case consumer.OutcomeAck:
		if aerr := d.Ack(false); aerr != nil {
			// The broker redelivers it; dedupe answers duplicate then.
			log.WarnContext(work, "rabbitsub: ack failed", "error", aerr)
		}
	case consumer.OutcomeAbandon:
		_ = d.Nack(false, true)
	case consumer.OutcomeDeadLetter:
		if dl == nil {
			if nerr := d.Reject(false); nerr != nil {
				log.WarnContext(work, "rabbitsub: reject failed", "error", nerr)
			}
			break
		}
		if perr := c.publishDeadLetter(stop, work, dl, d, m, err); perr != nil {
			log.WarnContext(work, "rabbitsub: dead letter not stored, returning the message", "error", perr)
			_ = d.Nack(false, true)
			outcome, err = consumer.OutcomeAbandon, perr
			break
		}
		if aerr := d.Ack(false); aerr != nil {
			log.WarnContext(work, "rabbitsub: ack after dead letter failed", "error", aerr)
		}
	}
	c.proc.End(ctx, m, outcome, err)
}

// publishDeadLetter publishes a copy of d with the reason and waits for the
// broker's confirm, retrying with backoff until stop is done.
func (c *Consumer) publishDeadLetter(stop, work context.Context, dl *deadLetters, d amqp.Delivery, m *consumer.Message, reason error) error {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[consumer.HeaderDeadLetterReason] = consumer.Reason(reason)
	headers[consumer.HeaderOriginalQueue] = c.queue
	headers[consumer.HeaderAttempts] = strconv.Itoa(m.Attempt)
	dlID := uuid.NewString()
	headers[HeaderDeadLetterID] = dlID
	pub := amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		UserId: d.UserId, AppId: d.AppId, Body: d.Body,
	}
	bo := c.proc.Backoff()
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
		RoutingKey:  d.RoutingKey,
		Body:        d.Body,
		Redelivered: d.Redelivered,
		System:      "rabbitmq",
		Source:      c.queue,
		Time:        d.Timestamp,
	}
	for k := range d.Headers {
		switch k {
		case lineage.HeaderMessageKey:
			m.Key = []byte(headerString(d.Headers, k))
		case lineage.HeaderCausationID:
		default:
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(d.Headers))
			}
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
