package rabbitpub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/internal/retry"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

var (
	errNack          = errors.New("broker nacked the message")
	errConfirmTimout = errors.New("confirm timed out")
)

// ChannelClosedError reports that the channel carrying a message closed
// before the broker confirmed it. The message is published again, unless
// the broker closed the channel for a reason publishing again cannot fix (a
// missing exchange, 404 NOT_FOUND; refused access, 403 ACCESS_REFUSED). It
// reaches callers as the cause of a [*publisher.PublishError] (at once for
// those reasons, otherwise when the context ends before a later attempt
// succeeds) and of an [publisher.Observer]'s PublishRetry; find it with
// [errors.As].
type ChannelClosedError struct {
	// Cause is why the channel closed: the broker's *amqp.Error when it
	// closed the channel or the connection (e.g. 320 CONNECTION_FORCED on
	// a node shutting down), otherwise the client's error (amqp.ErrClosed,
	// or the failure of a write on the channel). Never nil in errors this
	// package returns.
	Cause error
}

// Error implements error: "rabbitpub: channel closed before confirm", then
// the cause.
func (e *ChannelClosedError) Error() string {
	if e.Cause == nil {
		return "rabbitpub: channel closed before confirm"
	}
	return "rabbitpub: channel closed before confirm: " + e.Cause.Error()
}

// Unwrap returns the cause.
func (e *ChannelClosedError) Unwrap() error { return e.Cause }

// Publisher publishes messages to RabbitMQ with publisher confirms: Publish
// and PublishBatch return only once the broker has confirmed every message.
// Nacks, closed channels, lost connections and confirm timeouts lead to the
// message being published again, with the same ID, until the context ends;
// the connection is re-established as needed, to the next node when
// [WithFailoverURLs] names several. Refusals that retrying cannot fix
// (credentials, virtual host, a topology the broker rejects: see
// [rabbitmq.ErrRefused]) and invalid messages are returned at once.
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
// concurrently. Printed with any verb it shows its URLs without their
// passwords.
type Publisher struct {
	eps   *rabbitmq.Endpoints // the only place the URLs live
	gen   *forge.Generator
	cfg   config
	set   publisher.Settings
	slots chan *slot

	// frameMax is the frame_max negotiated on the latest connection; 0
	// before the first.
	frameMax atomic.Int64

	mu      sync.Mutex
	cur     *conn
	dialing *dialCall
	closed  bool // no new publishes
	shut    bool // no publish in progress either: connections may close
	active  sync.WaitGroup

	retries atomic.Int64 // messages published again; read by tests
}

type slot struct{ ch *channel }

// New returns a publisher that connects to url (an amqp:// or amqps:// URL;
// other nodes with [WithFailoverURLs]) and derives IDs with gen. It does no
// I/O: it connects on the first publish, or when [Publisher.Ping] is
// called. A URL that cannot parse is an error wrapping [rabbitmq.ErrRefused]
// that does not show the password.
func New(url string, gen *forge.Generator, opts ...publisher.Option) (*Publisher, error) {
	if gen == nil {
		return nil, errors.New("rabbitpub: nil generator")
	}
	if err := rabbitmq.ParseURL(url); err != nil {
		return nil, fmt.Errorf("rabbitpub: %w", err)
	}
	cfg := defaultConfig()
	set, err := publisher.Apply("rabbitpub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("rabbitpub: %w", err)
	}
	if set.MaxBodySize == 0 {
		set.MaxBodySize = DefaultMaxBodySize
	}
	eps, err := rabbitmq.NewEndpoints(append([]string{url}, cfg.failover...), cfg.amqpConfig)
	if err != nil {
		return nil, fmt.Errorf("rabbitpub: %w", err)
	}
	cfg.failover = nil
	p := &Publisher{eps: eps, gen: gen, cfg: cfg, set: set, slots: make(chan *slot, cfg.poolSize)}
	for range cfg.poolSize {
		p.slots <- &slot{}
	}
	return p, nil
}

// String describes p by its URLs, passwords redacted.
func (p *Publisher) String() string {
	if p == nil || p.eps == nil {
		return "rabbitpub.Publisher(nil)"
	}
	return "rabbitpub.Publisher(" + p.eps.String() + ")"
}

// Format prints [Publisher.String] for every verb (%v, %+v, %#v, %s, ...),
// so that no formatting of a Publisher reaches its URLs or its
// configuration.
func (p *Publisher) Format(f fmt.State, verb rune) {
	s := p.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// prepared is one message ready to send.
type prepared struct {
	key    string // routing key
	msgKey string // the message-key header
	hasKey bool   // the message has a key (and msgKey is its header)
	hdr    int    // size of the content header frame
	lin    lineage.Lineage
	pub    amqp.Publishing

	added bool // an observer set headers: check the table again
}

// prepare validates msg and builds its AMQP publishing. The body is not
// copied.
func (p *Publisher) prepare(ctx context.Context, msg *publisher.Message, now time.Time) (prepared, error) {
	if len(msg.Type) > maxShortString {
		return prepared{}, publisher.Invalid(msg.Type[:32]+"...", "type longer than %d bytes (AMQP shortstr)", maxShortString)
	}
	rk := msg.RoutingKey // the message's own, then WithQueue's, then the function's
	if rk == "" {
		rk = p.cfg.queue
	}
	if rk == "" {
		rk = p.cfg.routingKey(msg)
	}
	if len(rk) > maxShortString {
		return prepared{}, publisher.Invalid(msg.Type, "routing key longer than %d bytes", maxShortString)
	}
	for k := range msg.Headers {
		if err := checkHeaderName(msg.Type, k); err != nil {
			return prepared{}, err
		}
	}
	l, err := publisher.Stamp(ctx, p.gen, msg, p.set.MaxBodySize)
	if err != nil {
		return prepared{}, err
	}
	n := len(msg.Headers)
	if l.CausationID != uuid.Nil {
		n++
	}
	var msgKey string
	if len(msg.Key) > 0 {
		if msgKey, err = keyHeader(msg.Key); err != nil {
			return prepared{}, publisher.Invalid(msg.Type, "key: %v", err)
		}
		n++
	}
	if n > MaxHeaders {
		return prepared{}, publisher.Invalid(msg.Type, "%d header entries, more than %d (the most amqp091-go reads)", n, MaxHeaders)
	}
	var headers amqp.Table
	if n > 0 {
		headers = make(amqp.Table, n)
		for k, v := range msg.Headers {
			headers[k] = v
		}
		if l.CausationID != uuid.Nil {
			headers[lineage.HeaderCausationID] = l.CausationID.String()
		}
		if len(msg.Key) > 0 {
			headers[lineage.HeaderMessageKey] = msgKey
		}
	}
	m := prepared{key: rk, msgKey: msgKey, hasKey: len(msg.Key) > 0, lin: l, pub: amqp.Publishing{
		Headers:       headers,
		ContentType:   p.cfg.contentType,
		DeliveryMode:  p.cfg.deliveryMode,
		CorrelationId: l.CorrelationID.String(),
		MessageId:     l.MessageID.String(),
		Timestamp:     now,
		Type:          msg.Type,
		Body:          msg.Body,
	}}
	if m.hdr, err = rabbitmq.HeaderFrameSize(&m.pub); err != nil {
		return prepared{}, publisher.Invalid(msg.Type, "headers: %v", err)
	}
	if limit := int(p.frameMax.Load()); limit > 0 && m.hdr > limit {
		return prepared{}, frameError(&m, limit)
	}
	return m, nil
}

// checkHeaderName rejects a header name the broker refuses with a string
// value: longer than an AMQP shortstr, or CC and BCC, which RabbitMQ reads
// as arrays of extra routing keys (sender-selected distribution) and for
// which it closes the channel (406 PRECONDITION_FAILED) when given a
// string.
func checkHeaderName(msgType, name string) error {
	switch {
	case len(name) > maxShortString:
		return publisher.Invalid(msgType, "header name %.32q... longer than %d bytes (AMQP shortstr)", name, maxShortString)
	case name == "CC" || name == "BCC":
		return publisher.Invalid(msgType, "header %s is RabbitMQ's sender-selected distribution, which takes an array of routing keys, not a string", name)
	}
	return nil
}

// keyHeader returns the message-key header of a business key: the form
// publisher.KeyBytes gives it, as a string (an AMQP longstr carries any
// bytes).
func keyHeader(key []any) (string, error) {
	if len(key) == 1 {
		if s, ok := key[0].(string); ok {
			return s, nil
		}
	}
	b, err := publisher.KeyBytes(key)
	return string(b), err
}

// frameError is the error of a message whose content header does not fit in
// one frame of limit bytes: sent, it would make the broker close the
// connection (FRAME_ERROR) under every message in flight on it.
func frameError(m *prepared, limit int) error {
	return publisher.Invalid(m.pub.Type, "properties and headers take %d bytes, more than the connection's frame size of %d bytes (frame_max)", m.hdr, limit)
}

// setHeader adds a header an observer set, for [publisher.Publication].
func (m *prepared) setHeader(name, value string) {
	if m.pub.Headers == nil {
		m.pub.Headers = make(amqp.Table, 1)
	}
	m.pub.Headers[name] = value
	m.added = true
}

// recheck validates the headers again after an observer added some.
func (m *prepared) recheck(limit int) error {
	if !m.added {
		return nil
	}
	m.added = false
	if n := len(m.pub.Headers); n > MaxHeaders {
		return publisher.Invalid(m.pub.Type, "%d header entries once the observer's are added, more than %d (the most amqp091-go reads)", n, MaxHeaders)
	}
	for k, v := range m.pub.Headers {
		if err := checkHeaderName(m.pub.Type, k); err != nil {
			return err
		}
		if !utf8.ValidString(k) {
			return publisher.Invalid(m.pub.Type, "observer header name %q is not valid UTF-8", k)
		}
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			return publisher.Invalid(m.pub.Type, "observer header %q: value is not valid UTF-8", k)
		}
	}
	var err error
	if m.hdr, err = rabbitmq.HeaderFrameSize(&m.pub); err != nil {
		return publisher.Invalid(m.pub.Type, "headers: %v", err)
	}
	if limit > 0 && m.hdr > limit {
		return frameError(m, limit)
	}
	return nil
}

// checkFrame rejects, before anything is sent, a message whose content
// header exceeds the negotiated frame size. Headers within AMQP's minimum
// frame size need no check; for a bigger one, a publisher that has never
// connected connects first to learn the broker's limit (a refusal is
// returned; if that fails otherwise, the send path checks again on the
// connection it gets). *limit caches the
// limit across the messages of a batch; 0 means unknown.
func (p *Publisher) checkFrame(ctx context.Context, m *prepared, limit *int) error {
	if m.hdr <= minFrameMax {
		return nil
	}
	if *limit == 0 {
		*limit = int(p.frameMax.Load())
	}
	if *limit == 0 {
		if _, err := p.connection(ctx); err != nil {
			if errors.Is(err, rabbitmq.ErrRefused) {
				return err // publishing would only meet it again
			}
			return nil
		}
		*limit = int(p.frameMax.Load())
	}
	if *limit > 0 && m.hdr > *limit {
		return frameError(m, *limit)
	}
	return nil
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

// Ping connects now, if the publisher has no connection, and declares the
// topology ([WithTopology]): the explicit "fail fast" at start-up. It makes
// one attempt: it returns nil once connected, an error wrapping
// [rabbitmq.ErrRefused] at once when the broker refuses the credentials,
// the virtual host or the topology, otherwise the dial's error, or the
// context's when ctx ends first. After Close it returns
// [publisher.ErrClosed].
func (p *Publisher) Ping(ctx context.Context) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()
	if _, err := p.connection(ctx); err != nil {
		return fmt.Errorf("rabbitpub: ping: %w", err)
	}
	return nil
}

// Publish stamps msg with its IDs (see [publisher.IDs]), publishes it and
// waits for the broker's confirm. It returns nil once the broker has acked;
// an error wrapping [publisher.ErrInvalid] for bad input (nothing sent) and
// one wrapping [publisher.ErrClosed] after Close. Failures that publishing
// again cannot fix are returned at once (as a [*publisher.PublishError] once
// an attempt was made), wrapping [publisher.ErrUnroutable] when a mandatory
// message reached no queue, [rabbitmq.ErrRefused] when the broker refused
// the connection or the topology, or the broker's *amqp.Error for a missing
// exchange or refused access. Otherwise, when ctx ends first, it returns a
// [*publisher.PublishError] with the number of attempts and the last cause.
func (p *Publisher) Publish(ctx context.Context, msg publisher.Message) error {
	now := time.Now()
	m, err := p.prepare(ctx, &msg, now)
	if err != nil {
		return fmt.Errorf("rabbitpub: %w", err)
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()
	if p.set.Observer != nil {
		return p.publishObserved(ctx, m, now)
	}
	// m stays on the stack: nothing here keeps a pointer to it.
	if m.hdr > minFrameMax {
		var limit int
		if err := p.checkFrame(ctx, &m, &limit); err != nil {
			return fmt.Errorf("rabbitpub: %w", err)
		}
	}
	return retry.Do(ctx, "rabbitpub", m.lin.MessageID, p.set.NewBackOff, isPermanent, p.countRetry,
		func() error { return p.publishOne(ctx, &m) })
}

// publishObserved is Publish with an observer. m is a copy: the observer's
// Publication refers to it, so it lives on the heap, which Publish's own m
// does not have to.
func (p *Publisher) publishObserved(ctx context.Context, m prepared, now time.Time) error {
	o, err := p.begin(ctx, &m, 1, now, new(int))
	if err != nil {
		return fmt.Errorf("rabbitpub: %w", err)
	}
	var last error
	err = retry.Do(ctx, "rabbitpub", m.lin.MessageID, p.set.NewBackOff, isPermanent,
		func() { p.countRetry(); o.retry(last) },
		func() error {
			o.pub.Attempts++
			last = p.publishOne(ctx, &m)
			return last
		})
	o.done(err)
	return err
}

func (p *Publisher) countRetry() { p.retries.Add(1) }

// begin is what happens to a prepared message of PublishBatch, or of an
// observed Publish, before its first attempt: PublishStart when there is an
// observer (nil observation otherwise), then the frame size check, on the
// headers the observer may have added. On error the observer has been told
// (PublishDone). *limit caches the frame limit across a batch. Without an
// observer and with headers that fit in any frame, it does nothing and
// allocates nothing.
func (p *Publisher) begin(ctx context.Context, m *prepared, batch int, now time.Time, limit *int) (*observation, error) {
	var o *observation
	if p.set.Observer != nil {
		o = p.observe(ctx, m, batch, now)
		if err := m.recheck(int(p.frameMax.Load())); err != nil {
			o.done(fmt.Errorf("rabbitpub: %w", err))
			return nil, err
		}
	}
	if m.hdr > minFrameMax {
		if err := p.checkFrame(ctx, m, limit); err != nil {
			o.done(fmt.Errorf("rabbitpub: %w", err))
			return nil, err
		}
	}
	return o, nil
}

// observation is one message's events for the observer.
type observation struct {
	obs publisher.Observer
	ctx context.Context // as returned by PublishStart
	pub *publisher.Publication
}

// observe calls PublishStart for m.
func (p *Publisher) observe(ctx context.Context, m *prepared, batch int, start time.Time) *observation {
	pub := publisher.NewPublication(m.setHeader)
	pub.System = "rabbitmq"
	pub.Destination = p.cfg.exchange
	pub.RoutingKey = m.key
	if m.hasKey {
		pub.Key = []byte(m.msgKey)
	}
	pub.Lineage = m.lin
	pub.BodySize = len(m.pub.Body)
	pub.Batch = batch
	pub.Start = start
	o := &observation{obs: p.set.Observer, pub: pub}
	o.ctx = o.obs.PublishStart(ctx, pub)
	return o
}

// retry reports a failed attempt before the next; nothing when o is nil.
func (o *observation) retry(err error) {
	if o != nil {
		o.obs.PublishRetry(o.ctx, o.pub, err)
	}
}

// done reports the final result; nothing when o is nil.
func (o *observation) done(err error) {
	if o != nil {
		o.obs.PublishDone(o.ctx, o.pub, err)
	}
}

// isPermanent reports failures that publishing again cannot fix: an invalid
// or unroutable message, a refusal (credentials, virtual host, topology),
// a missing exchange, refused access.
func isPermanent(err error) bool {
	if errors.Is(err, publisher.ErrInvalid) || errors.Is(err, publisher.ErrUnroutable) || errors.Is(err, rabbitmq.ErrRefused) {
		return true
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return false
	}
	// Only the broker's verdicts on this publishing; the client reports
	// network failures as amqp.Error too (e.g. FrameError for an I/O timeout).
	return ae.Server && (ae.Code == amqp.NotFound || ae.Code == amqp.AccessRefused)
}

// unroutable is the error of a mandatory message the broker returned.
func unroutable(exchange, key string) error {
	if exchange == "" {
		return fmt.Errorf("%w: default exchange, routing key %q: no queue of that name", publisher.ErrUnroutable, key)
	}
	return fmt.Errorf("%w: exchange %q, routing key %q: no queue bound for it", publisher.ErrUnroutable, exchange, key)
}

// publishOne makes one attempt to publish m and waits for its confirm.
func (p *Publisher) publishOne(ctx context.Context, m *prepared) error {
	var dcs [1]*amqp.DeferredConfirmation
	ms := [1]*prepared{m}
	ch, n, err := p.send(ctx, ms[:], []int{0}, dcs[:])
	if err != nil && n == 0 {
		return err
	}
	if dcs[0] == nil {
		return frameError(m, ch.conn.frameMax)
	}
	t := time.NewTimer(p.cfg.confirmTimeout)
	defer t.Stop()
	select {
	case <-dcs[0].Done():
		return p.outcome(ch, dcs[0], m)
	case <-t.C:
		return errConfirmTimout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outcome returns the result of m, whose confirm is done.
func (p *Publisher) outcome(ch *channel, dc *amqp.DeferredConfirmation, m *prepared) error {
	err := ch.outcome(dc, m.pub.MessageId)
	if err == publisher.ErrUnroutable {
		return unroutable(p.cfg.exchange, m.key)
	}
	return err
}

// send acquires a channel, publishes msgs[i] for each i in idx on it and
// releases it. It stores the confirm of msgs[idx[k]] in dcs[k] and returns
// how many of them (a prefix of idx) were handled; on error the others were
// not sent. A handled message whose header does not fit in a frame of this
// connection is skipped: its dcs[k] stays nil.
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
		if m.hdr > minFrameMax && m.hdr > ch.conn.frameMax {
			dcs[n] = nil
			continue
		}
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
	if p.dialing != nil {
		p.dialing.cancel()
	}
	p.mu.Unlock()
	if c != nil {
		if err := c.c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("rabbitpub: close: %w", err)
		}
	}
	return nil
}
