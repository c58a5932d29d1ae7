package rabbitsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// Defaults.
const (
	// DefaultPrefetch is the channel's prefetch count: room for every
	// worker's batch in progress and as many waiting, so that a worker
	// that finishes one finds the next (make bench measures it).
	DefaultPrefetch = 256
	// DefaultWorkers is how many deliveries are handled at once.
	DefaultWorkers = 4
	// DefaultBatchSize is the most deliveries a worker processes as one
	// batch.
	DefaultBatchSize = 32
)

type dialFunc = func(url string, cfg amqp.Config) (*amqp.Connection, error)

// config is this transport's own configuration; the shared one is
// consumer.Settings.
type config struct {
	prefetch, workers int
	batch             int
	dlExchange, dlKey string
	dlQueue           bool   // dlKey names a queue reached through the default exchange
	dlDeclare         bool   // declare that queue (the default dead-letter queue)
	dlReject          bool   // reject to the queue's own x-dead-letter-exchange instead
	dlBy              string // the option that set the dead-letter destination; "": the default
	tag               string
	amqpConfig        amqp.Config
	topology          rabbitmq.Topology
	failover          []string // moved into the Endpoints by New
	wrapDial          func(dialFunc) dialFunc
	unguarded         bool
}

// WithPrefetch sets the channel's prefetch count: how many unacked
// deliveries the broker sends ahead, which bounds the batches the workers
// find waiting ([WithBatchSize]). Default: [DefaultPrefetch]; it must be at
// least the number of workers. The consumer holds up to that many message
// bodies in memory: lower it for large messages.
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
// [DefaultWorkers]. More workers than the prefetch count ([WithPrefetch])
// is an error from New.
func WithWorkers(n int) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithWorkers", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.workers = n
		return nil
	})
}

// WithBatchSize sets the most deliveries a worker processes as one batch
// (see "Batches" in the package documentation): their claims in one round
// trip to the dedupe store, their completions in another (or, with a
// dedupe.BatchInbox such as the PostgreSQL store, one transaction), and
// their acks after that. A worker never waits to fill a batch: it takes
// what the prefetch window already holds, up to n. 1 processes each
// delivery on its own. Default: [DefaultBatchSize]. With the PostgreSQL
// inbox, keep n at most 64 (see pgstore's ProcessBatch).
func WithBatchSize(n int) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithBatchSize", func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%d < 1", n)
		}
		c.batch = n
		return nil
	})
}

// WithDeadLetterExchange publishes dead letters to exchange with routing key
// key, in confirm mode, with the reason in [consumer.HeaderDeadLetterReason];
// the original is acked only after the broker confirmed the dead letter. The
// dead letter is published as mandatory: if the exchange routes it to no
// queue, the broker returns it, the original is not acked and goes back to
// its queue, and the error is logged. Default: the durable queue
// "<queue>.dead-letter" ([consumer.DeadLetterSuffix]), declared on every
// (re)connect unless [WithTopology] declares it. It conflicts with
// [WithDeadLetterQueue] and [WithQueueDeadLetterExchange]: giving two of the
// three is an error from New (given twice, the last exchange and key win).
func WithDeadLetterExchange(exchange, key string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDeadLetterExchange", func(c *config) error {
		if err := c.deadLetterBy("rabbitsub.WithDeadLetterExchange"); err != nil {
			return err
		}
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = exchange, key, false, false, false
		return nil
	})
}

// WithDeadLetterQueue publishes dead letters straight to queue (through the
// default exchange) like [WithDeadLetterExchange]; the queue must exist
// (or be declared by [WithTopology]), which is checked on every
// (re)connect. Default: the durable queue "<queue>.dead-letter", declared
// by the consumer. It conflicts with [WithDeadLetterExchange] and
// [WithQueueDeadLetterExchange]: giving two of the three is an error from
// New (given twice, the last queue wins).
func WithDeadLetterQueue(queue string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithDeadLetterQueue", func(c *config) error {
		if queue == "" {
			return errors.New("empty queue name")
		}
		if err := c.deadLetterBy("rabbitsub.WithDeadLetterQueue"); err != nil {
			return err
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
// Default: the consumer publishes dead letters itself, to the durable queue
// "<queue>.dead-letter". It conflicts with [WithDeadLetterExchange] and
// [WithDeadLetterQueue]: giving two of the three is an error from New.
func WithQueueDeadLetterExchange() consumer.Option {
	return consumer.TransportOption("rabbitsub.WithQueueDeadLetterExchange", func(c *config) error {
		if err := c.deadLetterBy("rabbitsub.WithQueueDeadLetterExchange"); err != nil {
			return err
		}
		c.dlExchange, c.dlKey, c.dlQueue, c.dlDeclare, c.dlReject = "", "", false, false, true
		return nil
	})
}

// deadLetterBy records that option chose where dead letters go; it is an
// error when another dead-letter option chose already.
func (c *config) deadLetterBy(option string) error {
	if c.dlBy != "" && c.dlBy != option {
		return fmt.Errorf("conflicts with %s (dead letters go to one place)", c.dlBy)
	}
	c.dlBy = option
	return nil
}

// WithConsumerTag sets the consumer tag. Default: "uuidforge-" and a random
// UUID.
func WithConsumerTag(tag string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithConsumerTag", func(c *config) error { c.tag = tag; return nil })
}

// WithAMQPConfig sets the connection configuration (TLS, heartbeat,
// connection name...). Default: a 10 s heartbeat. Its Recovery field must
// stay nil (the consumer reconnects itself): anything else is an error
// from New. What the URL also says is merged as amqp091-go merges it: the
// URL's heartbeat wins over cfg's, while cfg's Vhost, SASL and
// TLSClientConfig, when set, win over the URL's vhost, auth_mechanism and
// TLS parameters.
func WithAMQPConfig(cfg amqp.Config) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithAMQPConfig", func(c *config) error {
		if cfg.Recovery != nil {
			return errors.New("amqp.Config.Recovery must be nil: the consumer recovers connections itself")
		}
		c.amqpConfig = cfg
		return nil
	})
}

// WithFailoverURLs adds the URLs of other nodes of the broker's cluster:
// each (re)connect tries the URLs in turn, starting after the one that
// last worked ([rabbitmq.Endpoints]). Every URL is checked in New; given
// several times, the URLs add up. Default: only the URL given to New.
func WithFailoverURLs(urls ...string) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithFailoverURLs", func(c *config) error {
		if len(urls) == 0 {
			return errors.New("no URL")
		}
		for _, u := range urls {
			if err := rabbitmq.ParseURL(u); err != nil {
				return err
			}
		}
		c.failover = append(c.failover, urls...)
		return nil
	})
}

// WithTopology declares t (exchanges, queues, bindings; see
// [rabbitmq.Topology]) on every connect, before consuming, so that a fresh
// broker or a node that lost its definitions is set up first. When t
// declares the default dead-letter queue "<queue>.dead-letter" (for
// example as a quorum queue), the consumer uses that declaration instead of
// its own. Given several times, the topologies add up, in order. A
// declaration the broker refuses at the first connection (e.g. a queue
// that exists with other arguments) is an error from Run. Default: nothing
// is declared but the dead-letter queue, and the consumed queue must exist.
func WithTopology(t rabbitmq.Topology) consumer.Option {
	return consumer.TransportOption("rabbitsub.WithTopology", func(c *config) error {
		if err := t.Validate(); err != nil {
			return err
		}
		c.topology = c.topology.Merge(t)
		return nil
	})
}

// Consumer runs a handler for every message of one queue. Create it with
// [New]; Run it once at a time. Run and Ping may be called from any
// goroutine.
type Consumer struct {
	ends  *rabbitmq.Endpoints // the only holder of the URLs
	queue string
	cfg   config
	set   consumer.Settings
	proc  *consumer.Processor

	guards sync.Map // *amqp.Connection -> *guard, while the connection is in use
}

// New returns a consumer of queue on the broker at url (an amqp:// or
// amqps:// URL; more nodes with [WithFailoverURLs]) that passes each
// delivery to h wrapped in the standard chain of opts
// ([consumer.NewHandler]: lineage, deduplication with
// [consumer.WithDedupe], timeout, recovery). Options are the shared
// consumer options and this package's own. A URL that cannot be dialled
// (it does not parse, names an unknown authentication mechanism or an
// impossible port) is an error, which never shows the password. New does
// no I/O; [Consumer.Ping] connects at once.
func New(url, queue string, h consumer.Handler, opts ...consumer.Option) (*Consumer, error) {
	if queue == "" {
		return nil, errors.New("rabbitsub: empty queue name")
	}
	if err := rabbitmq.ParseURL(url); err != nil {
		return nil, fmt.Errorf("rabbitsub: %w", err)
	}
	cfg := config{prefetch: DefaultPrefetch, workers: DefaultWorkers, batch: DefaultBatchSize,
		dlKey: queue + consumer.DeadLetterSuffix, dlQueue: true, dlDeclare: true,
		amqpConfig: amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"}}
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
	ends, err := rabbitmq.NewEndpoints(append([]string{url}, cfg.failover...), cfg.amqpConfig)
	if err != nil {
		return nil, fmt.Errorf("rabbitsub: %w", err)
	}
	cfg.failover = nil
	c := &Consumer{ends: ends, queue: queue, cfg: cfg, set: set, proc: set.Processor(chain)}
	dial := c.dialGuarded
	if cfg.unguarded {
		dial = amqp.DialConfig
	}
	if cfg.wrapDial != nil {
		dial = cfg.wrapDial(dial)
	}
	ends.SetDialFunc(dial)
	return c, nil
}

// String describes the consumer by its queue and redacted URLs.
func (c *Consumer) String() string {
	return fmt.Sprintf("rabbitsub.Consumer(queue %q at %s)", c.queue, c.ends)
}

// Ping connects now and checks what Run needs: the credentials and virtual
// host, the topology of [WithTopology] (declared), the dead-letter queue
// (declared, or checked to exist) and the consumed queue (checked to
// exist). Refusals of credentials or virtual host wrap
// [rabbitmq.ErrRefused]. The connection is closed before Ping returns; ctx
// bounds the whole check.
func (c *Consumer) Ping(ctx context.Context) error {
	conn, _, err := c.ends.Dial(ctx)
	if err != nil {
		return fmt.Errorf("rabbitsub: ping: %w", err)
	}
	defer c.release(conn)
	done := make(chan error, 1)
	go func() {
		err := c.setup(conn)
		if err == nil {
			err = c.checkQueue(conn)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = conn.Close()
		<-done
		return fmt.Errorf("rabbitsub: ping: %w", ctx.Err())
	}
}

func (c *Consumer) release(conn *amqp.Connection) {
	c.guards.Delete(conn)
	_ = conn.Close()
}

func (c *Consumer) guard(conn *amqp.Connection) *guard {
	if g, ok := c.guards.Load(conn); ok {
		return g.(*guard)
	}
	return nil
}

// setup declares the topology and the dead-letter queue (or checks that the
// dead-letter queue exists) on a channel of its own.
func (c *Consumer) setup(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitsub: open channel: %w", err)
	}
	defer ch.Close()
	if err := c.cfg.topology.Declare(ch); err != nil {
		return fmt.Errorf("rabbitsub: %w", err)
	}
	declared := slices.ContainsFunc(c.cfg.topology.Queues, func(q rabbitmq.Queue) bool { return q.Name == c.cfg.dlKey })
	switch {
	case c.cfg.dlReject:
	case c.cfg.dlDeclare && !declared:
		if _, err := ch.QueueDeclare(c.cfg.dlKey, true, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbitsub: declare dead-letter queue %q: %w", c.cfg.dlKey, rabbitmq.Classify(err))
		}
	case c.cfg.dlQueue:
		if _, err := ch.QueueDeclarePassive(c.cfg.dlKey, false, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbitsub: dead-letter queue %q: %w", c.cfg.dlKey, rabbitmq.Classify(err))
		}
	}
	return nil
}

func (c *Consumer) checkQueue(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitsub: open channel: %w", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclarePassive(c.queue, false, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbitsub: queue %q: %w", c.queue, rabbitmq.Classify(err))
	}
	return nil
}

// Run consumes until ctx is done, then shuts down gracefully: it stops
// taking deliveries (prefetched ones that were not started are returned to
// the queue), lets the handlers in progress finish and ack — with the rest
// of their batch, whose members were claimed together (see "Batches" in the
// package documentation) — for at most the shutdown timeout, closes its
// connection and returns nil. A lost
// connection or channel is re-established with backoff, which starts again
// from the minimum only after a delivery was acked or dead-lettered; the
// broker redelivers unacked messages and dedupe recognises those already
// done. Run returns an error at once when the broker refuses the
// credentials or the virtual host (wrapping [rabbitmq.ErrRefused]), and
// for a configuration the broker rejects at the first connection (a
// missing queue, a conflicting topology).
func (c *Consumer) Run(ctx context.Context) error {
	bo := c.proc.Backoff()
	first := true
	// After the client closed a connection on a frame it cannot read, the
	// next deliveries are taken one at a time: the message that killed the
	// connection is among the prefetch window's returned messages, so that
	// each further death is charged to it alone (a quorum queue's delivery
	// count) and never to the messages delivered with it.
	cautious := 0
	for {
		conn, url, err := c.ends.Dial(ctx)
		if ctx.Err() != nil {
			if conn != nil {
				_ = conn.Close()
			}
			return nil
		}
		log := c.set.Logger.With("queue", c.queue)
		if err != nil {
			if errors.Is(err, rabbitmq.ErrRefused) {
				return fmt.Errorf("rabbitsub: %w", err)
			}
			log.WarnContext(ctx, "rabbitsub: cannot connect, retrying", "error", err)
		} else {
			res := c.session(ctx, conn, cautious)
			c.release(conn)
			if ctx.Err() != nil {
				return nil
			}
			if res.setup && (first || errors.Is(res.err, rabbitmq.ErrRefused)) {
				return res.err
			}
			first = false
			if res.settled > 0 {
				bo.Reset()
			}
			log = log.With("url", url)
			switch {
			case res.frameError:
				cautious = c.cfg.prefetch
				log.ErrorContext(ctx, "rabbitsub: the AMQP client closed the connection on a frame it cannot read; "+
					"taking the next deliveries one at a time, backing off until one succeeds "+
					"(such a message stays at the head of a classic queue until it is removed; a quorum queue "+
					"with a delivery limit dead-letters it)", "settled", res.settled, "error", res.err)
			case res.restart:
				cautious = 0
				log.InfoContext(ctx, "rabbitsub: deliveries succeed again; reconnecting to consume with the full prefetch window")
			case res.setup:
				log.ErrorContext(ctx, "rabbitsub: setup failed, retrying", "error", res.err)
			default:
				cautious = max(0, cautious-res.settled)
				log.WarnContext(ctx, "rabbitsub: connection lost, reconnecting", "error", res.err)
			}
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// sessionResult is how a session over one connection ended.
type sessionResult struct {
	err        error
	setup      bool // declaring or starting to consume failed
	settled    int  // deliveries acked or dead-lettered
	frameError bool // the client closed the connection on a frame it cannot read
	restart    bool // ended to consume with the full prefetch window again
}

// session is the state of one connection's consumption.
type session struct {
	conn      *amqp.Connection
	guard     *guard // nil without the guard
	dl        *deadLetters
	settled   atomic.Int64
	restartAt int64         // settled deliveries after which the session ends (one at a time); 0: never
	restart   chan struct{} // closed then
	acks      *acker
}

// progressed notes that a delivery was acked or dead-lettered.
func (s *session) progressed() {
	if n := s.settled.Add(1); n == s.restartAt {
		close(s.restart)
	}
}

// session consumes over one connection until ctx is done or the
// connection or its channel fails. With cautious > 0 it takes one delivery
// at a time and ends after cautious of them were settled.
func (c *Consumer) session(ctx context.Context, conn *amqp.Connection, cautious int) (res sessionResult) {
	s := &session{conn: conn, guard: c.guard(conn), restart: make(chan struct{})}
	prefetch := c.cfg.prefetch
	if cautious > 0 {
		prefetch, s.restartAt = 1, int64(cautious)
	}
	defer func() { res.settled = int(s.settled.Load()) }()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if err := c.setup(conn); err != nil {
		// A refusal closes the channel; a lost connection is no setup error.
		return sessionResult{err: err, setup: !conn.IsClosed()}
	}
	ch, err := conn.Channel()
	if err != nil {
		return sessionResult{err: fmt.Errorf("rabbitsub: open channel: %w", err)}
	}
	defer ch.Close()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return sessionResult{err: fmt.Errorf("rabbitsub: qos: %w", err)}
	}
	if !c.cfg.dlReject {
		s.dl = &deadLetters{conn: conn, exchange: c.cfg.dlExchange, key: c.cfg.dlKey,
			frameMax: rabbitmq.FrameMax(conn), returnsBuffer: 64 + 2*c.cfg.workers}
		defer s.dl.close()
	}
	tag := c.cfg.tag
	if tag == "" {
		tag = "uuidforge-" + uuid.NewString()
	}
	deliveries, err := ch.Consume(c.queue, tag, false, false, false, false, nil)
	if err != nil {
		return sessionResult{err: fmt.Errorf("rabbitsub: consume %q: %w", c.queue, rabbitmq.Classify(err)), setup: !conn.IsClosed()}
	}
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	s.acks = newAcker(ch)

	// stop ends taking and waiting (on shutdown, or when the channel is
	// gone); work outlives ctx by the shutdown timeout, so in-flight
	// handlers finish.
	shutdown, work, release := consumer.ShutdownContexts(ctx, c.set.ShutdownTimeout)
	defer release()
	stop, cancelStop := context.WithCancel(shutdown)
	defer cancelStop()
	// The pump moves deliveries into a buffer as they arrive, so that a
	// worker can take what is already there without waiting (the client's
	// own channel is unbuffered).
	buf := make(chan amqp.Delivery, prefetch)
	go func() {
		defer close(buf)
		for d := range deliveries {
			select {
			case buf <- d: // never waits: the broker sends at most prefetch unacked deliveries
			case <-stop.Done():
				return // d goes back to the queue when the channel closes
			}
		}
	}()
	var wg sync.WaitGroup
	for range c.cfg.workers {
		wg.Go(func() { c.work(stop, work, s, ch, buf) })
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var cause *amqp.Error
	select {
	case <-ctx.Done():
	case <-workersDone: // the delivery channel closed: the broker cancelled us, or the connection died
		res.err = errors.New("rabbitsub: consumer cancelled by the broker")
	case cause = <-closed:
	case cause = <-chClosed:
		res.err = fmt.Errorf("rabbitsub: channel closed: %v", cause)
	case <-s.restart: // the next session takes the full window (a consumer's prefetch cannot be raised)
		res.restart = true
	}
	// A dying connection tells its own listeners before it closes its
	// channels and their deliveries: its reason, if any, is here already.
	select {
	case e := <-closed:
		if e != nil {
			cause = e
		}
	default:
	}
	if conn.IsClosed() && cause != nil && ctx.Err() == nil {
		res.err = fmt.Errorf("rabbitsub: connection closed: %v", cause)
	}
	res.frameError = cause != nil && !cause.Server && (cause.Code == amqp.FrameError || cause.Code == amqp.SyntaxError)
	if ctx.Err() != nil || res.restart {
		// Stop taking; prefetched deliveries go back to the queue when the
		// channel closes after the workers are done.
		_ = ch.Cancel(tag, false)
	}
	cancelStop()
	<-workersDone
	return res
}

// publishDeadLetter stores d in the dead letter and waits for the broker's
// confirm. A failure (the broker refused or returned the dead letter, or
// closed the channel) is retried in place with backoff, on a new channel
// when needed, holding the delivery, until the dead letter is stored, stop
// is done or the connection is gone.
func (c *Consumer) publishDeadLetter(stop, work context.Context, dl *deadLetters, d *amqp.Delivery, raw []byte, reason string, attempts int, log *slog.Logger) error {
	pub, id, err := c.deadLetter(d, raw, reason, attempts, dl.frameMax)
	if err != nil {
		return err
	}
	bo := c.proc.Backoff()
	for {
		err := dl.publish(work, &pub, id)
		if err == nil {
			return nil
		}
		if dl.conn.IsClosed() {
			return fmt.Errorf("rabbitsub: dead letter: %w", err)
		}
		wait := bo.NextBackOff()
		log.WarnContext(work, "rabbitsub: dead letter not stored, retrying", "error", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-stop.Done():
			t.Stop()
			return fmt.Errorf("rabbitsub: dead letter: %w", err)
		case <-t.C:
		}
	}
}

// message returns the consumer.Message of d; its Body is d's, not a copy.
func (c *Consumer) message(d *amqp.Delivery) *consumer.Message {
	m := &consumer.Message{
		Type:        d.Type,
		RoutingKey:  d.RoutingKey,
		Exchange:    d.Exchange,
		Body:        d.Body,
		Redelivered: d.Redelivered,
		System:      "rabbitmq",
		Source:      c.queue,
		Time:        d.Timestamp,
	}
	for k := range d.Headers {
		switch k {
		case lineage.HeaderMessageKey:
			m.Key = []byte(tableString(d.Headers[k]))
		case lineage.HeaderCausationID:
		default:
			if m.Headers == nil {
				m.Headers = make(map[string]string, len(d.Headers))
			}
			m.Headers[k] = tableString(d.Headers[k])
		}
	}
	return m
}
