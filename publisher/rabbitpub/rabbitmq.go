package rabbitpub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/internal/retry"
)

var (
	errNack          = errors.New("broker nacked the message")
	errConfirmTimout = errors.New("confirm timed out")
)

// ChannelClosedError reports that the channel carrying a message closed
// before the broker confirmed it; the message is published again.
type ChannelClosedError struct{ Cause error }

// Error implements error.
func (e *ChannelClosedError) Error() string {
	if e.Cause == nil {
		return "channel closed before confirm"
	}
	return "channel closed before confirm: " + e.Cause.Error()
}

// Unwrap returns the cause.
func (e *ChannelClosedError) Unwrap() error { return e.Cause }

// Publisher publishes messages to RabbitMQ with publisher confirms: Publish
// and PublishBatch return only once the broker has confirmed every message.
// Nacks, closed channels, lost connections and confirm timeouts lead to the
// message being published again, with the same ID, until the context ends;
// the connection is re-established as needed.
//
// Because a message may be published again after the broker already stored
// it (an ack lost with the connection), consumers can see duplicates; they
// carry the same message ID, so consumers deduplicate them. Likewise a
// publish that fails because its context ended may still have reached the
// broker: publishing is at-least-once, and publishing the same message again
// later is safe.
//
// A publish waits for its context on a connection the broker has blocked
// (connection.blocked, a resource alarm) instead of sending into it, and
// opening connections and channels and waiting for confirms are all bounded
// by the context. Only a socket write that the kernel cannot buffer (a very
// large body into a stalled connection) can outlast the context, until the
// heartbeat (10 s by default) declares the connection dead.
//
// A Publisher is safe for concurrent use. It keeps a pool of channels, each
// used by one goroutine at a time to send, while confirms are collected
// concurrently.
type Publisher struct {
	url   string
	gen   *forge.Generator
	cfg   config
	set   publisher.Settings
	slots chan *slot

	mu      sync.Mutex
	cur     *conn
	dialing *dialCall
	closed  bool // no new publishes
	shut    bool // no publish in progress either: connections may close
	active  sync.WaitGroup

	retries atomic.Int64 // messages published again; read by tests
}

type slot struct{ ch *channel }

// New returns a publisher that connects to url (an amqp:// or amqps:// URL)
// and derives IDs with gen. It connects lazily, on first publish, so New
// itself does no I/O.
func New(url string, gen *forge.Generator, opts ...publisher.Option) (*Publisher, error) {
	if gen == nil {
		return nil, errors.New("rabbitpub: nil generator")
	}
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("rabbitpub: url: %w", err)
	}
	cfg := defaultConfig()
	set, err := publisher.Apply("rabbitpub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if set.MaxBodySize == 0 {
		set.MaxBodySize = DefaultMaxBodySize
	}
	p := &Publisher{url: url, gen: gen, cfg: cfg, set: set, slots: make(chan *slot, cfg.poolSize)}
	for range cfg.poolSize {
		p.slots <- &slot{}
	}
	return p, nil
}

// prepared is one message ready to send.
type prepared struct {
	id  string
	key string
	pub amqp.Publishing
}

// prepare validates msg and builds its AMQP publishing.
func (p *Publisher) prepare(ctx context.Context, msg *publisher.Message, now time.Time) (prepared, error) {
	if len(msg.Type) > maxShortString {
		return prepared{}, fmt.Errorf("rabbitpub: %w", publisher.Invalid(msg.Type[:32]+"...", "type longer than %d bytes (AMQP shortstr)", maxShortString))
	}
	rk := msg.RoutingKey
	if rk == "" {
		rk = p.cfg.routingKey(msg)
	}
	if len(rk) > maxShortString {
		return prepared{}, fmt.Errorf("rabbitpub: %w", publisher.Invalid(msg.Type, "routing key longer than %d bytes", maxShortString))
	}
	var headers amqp.Table
	if len(msg.Headers) > 0 {
		headers = make(amqp.Table, len(msg.Headers)+1)
		for k, v := range msg.Headers {
			if len(k) > maxShortString {
				return prepared{}, fmt.Errorf("rabbitpub: %w", publisher.Invalid(msg.Type, "header name %.32q... longer than %d bytes (AMQP shortstr)", k, maxShortString))
			}
			headers[k] = v
		}
	}
	l, err := publisher.Stamp(ctx, p.gen, msg, p.set.MaxBodySize)
	if err != nil {
		return prepared{}, fmt.Errorf("rabbitpub: %w", err)
	}
	if l.CausationID != uuid.Nil {
		if headers == nil {
			headers = make(amqp.Table, 1)
		}
		headers[lineage.HeaderCausationID] = l.CausationID.String()
	}
	id := l.MessageID.String()
	return prepared{id: id, key: rk, pub: amqp.Publishing{
		Headers:       headers,
		ContentType:   p.cfg.contentType,
		DeliveryMode:  p.cfg.deliveryMode,
		CorrelationId: l.CorrelationID.String(),
		MessageId:     id,
		Timestamp:     now,
		Type:          msg.Type,
		Body:          msg.Body,
	}}, nil
}

func (p *Publisher) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("rabbitpub: %w", publisher.ErrClosed)
	}
	p.active.Add(1)
	return nil
}

// Publish stamps msg with its IDs (see [publisher.IDs]), publishes it and
// waits for the broker's confirm. It returns nil once the broker has acked;
// an error wrapping [publisher.ErrUnroutable] when a mandatory message
// reached no queue; an error wrapping [publisher.ErrInvalid] for bad input
// (nothing sent); otherwise, when ctx ends first, a [*publisher.PublishError]
// with the number of attempts and the last cause.
func (p *Publisher) Publish(ctx context.Context, msg publisher.Message) error {
	m, err := p.prepare(ctx, &msg, time.Now())
	if err != nil {
		return err
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()

	return retry.Do(ctx, "rabbitpub", uuid.MustParse(m.id), p.set.NewBackOff,
		func(err error) bool { return errors.Is(err, publisher.ErrUnroutable) || isPermanent(err) },
		func() { p.retries.Add(1) },
		func() error { return p.publishOne(ctx, &m) })
}

// isPermanent reports broker errors that publishing again cannot fix: a
// missing exchange, refused access.
func isPermanent(err error) bool {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return false
	}
	// Only the broker's verdicts on this publishing; the client reports
	// network failures as amqp.Error too (e.g. FrameError for an I/O timeout).
	return ae.Server && (ae.Code == amqp.NotFound || ae.Code == amqp.AccessRefused)
}

// publishOne makes one attempt to publish m and waits for its confirm.
func (p *Publisher) publishOne(ctx context.Context, m *prepared) error {
	var dcs [1]*amqp.DeferredConfirmation
	ch, n, err := p.send(ctx, []*prepared{m}, []int{0}, dcs[:])
	if err != nil && n == 0 {
		return err
	}
	t := time.NewTimer(p.cfg.confirmTimeout)
	defer t.Stop()
	select {
	case <-dcs[0].Done():
		return ch.outcome(dcs[0], m.id)
	case <-t.C:
		return errConfirmTimout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send acquires a channel, publishes msgs[i] for each i in idx on it and
// releases it. It stores the confirm of msgs[idx[k]] in dcs[k] and returns
// how many of them (a prefix of idx) were sent; on error the others were not.
func (p *Publisher) send(ctx context.Context, msgs []*prepared, idx []int, dcs []*amqp.DeferredConfirmation) (*channel, int, error) {
	var s *slot
	select {
	case s = <-p.slots:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	defer func() { p.slots <- s }()
	if s.ch == nil || s.ch.isDead() {
		c, err := p.connection(ctx)
		if err != nil {
			return nil, 0, err
		}
		ch, err := c.openChannelContext(ctx)
		if err != nil {
			return nil, 0, err
		}
		s.ch = ch
	}
	ch := s.ch
	if err := ch.conn.waitUnblocked(ctx); err != nil {
		return ch, 0, err
	}
	for n, i := range idx {
		if n%64 == 63 {
			// A long batch: do not keep sending into a blocked connection,
			// and keep the returns buffer from filling.
			if err := ch.conn.waitUnblocked(ctx); err != nil {
				return ch, n, err
			}
			ch.drain()
		}
		m := msgs[i]
		dc, err := ch.ch.PublishWithDeferredConfirm(p.cfg.exchange, m.key, p.cfg.mandatory, false, m.pub)
		if err != nil {
			return ch, n, &ChannelClosedError{Cause: err}
		}
		dcs[n] = dc
	}
	return ch, len(idx), nil
}

// Close stops accepting new publishes, waits until every Publish and
// PublishBatch in progress has returned (each is bounded by its own context,
// and returns once its messages are confirmed), then closes the connection.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.active.Wait()

	p.mu.Lock()
	c := p.cur
	p.cur = nil
	p.shut = true // a dial still running closes its connection itself
	p.mu.Unlock()
	if c != nil {
		if err := c.c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("rabbitpub: close: %w", err)
		}
	}
	return nil
}
