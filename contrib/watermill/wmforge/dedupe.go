package wmforge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/ackhook"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
)

// Option configures a [Deduplicator]. A bad value is an error from
// [NewDeduplicator] that names the option.
type Option func(*config) error

type config struct {
	scope            string
	lease, retention time.Duration
	key              func(*message.Message) (uuid.UUID, error)
	gen              *forge.Generator
	noInbox          bool
}

// WithScope deduplicates every message in scope instead of the name of the
// router handler that runs it. A scope names one consumer of a stream:
// two handlers that both must process a message need two scopes, and one
// scope shared by handlers of different topics makes a message ID seen on
// one topic a duplicate on the other. Default: the handler's name
// (message.HandlerNameFromCtx), which is unique in a router; a message
// that reaches the middleware outside a router then fails with [ErrNoScope].
func WithScope(scope string) Option {
	return func(c *config) error {
		if err := (dedupe.Key{Scope: scope, ID: uuid.UUID{1}}).Validate(); err != nil {
			return fmt.Errorf("WithScope(%q): %w", scope, err)
		}
		c.scope = scope
		return nil
	}
}

// WithLease sets how long a claim is held before another consumer may take
// the message; it must cover the handler, the router's publishing of the
// messages it produced and the acknowledgement. Default: the store's
// (dedupe.DefaultLease for the stores of this module).
func WithLease(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithLease(%v): must be positive", d)
		}
		c.lease = d
		return nil
	}
}

// WithRetention sets how long a processed message is remembered as a
// duplicate. Default: the store's; dedupe.Forever where the store supports
// it.
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 && d != dedupe.Forever {
			return fmt.Errorf("WithRetention(%v): must be positive or dedupe.Forever", d)
		}
		c.retention = d
		return nil
	}
}

// WithKey sets how a message's ID is found. Default: [MessageID] with the
// generator of [WithGenerator].
func WithKey(f func(*message.Message) (uuid.UUID, error)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("WithKey(nil)")
		}
		c.key = f
		return nil
	}
}

// WithGenerator sets the generator of content IDs for messages that carry
// no ID (see [MessageID]). Default: forge.New(consumer.DefaultContentNamespace),
// the one our consumers use. Every consumer of one scope must use the same.
func WithGenerator(g *forge.Generator) Option {
	return func(c *config) error {
		if g == nil {
			return errors.New("WithGenerator(nil)")
		}
		c.gen = g
		return nil
	}
}

// WithoutInbox uses a store that implements dedupe.Inbox (pgstore) through
// its plain Claim / Complete / Release methods. Default: the handler runs
// inside the inbox transaction.
func WithoutInbox() Option {
	return func(c *config) error { c.noInbox = true; return nil }
}

// ErrNoScope is returned for a message that reached a [Deduplicator]
// without [WithScope] outside a router handler (no handler name in its
// context).
var ErrNoScope = errors.New("wmforge: no dedupe scope: the message carries no router handler name (use WithScope)")

// ErrNoID is wrapped by the error [MessageID] returns for a message with
// neither an ID nor content to derive one from.
var ErrNoID = errors.New("wmforge: message has no ID")

// MessageID returns the deterministic ID of msg, the first of:
// metadata [MetadataMessageID] (set by this module's subscribers); the
// message's UUID when it is one (any form uuid.Parse accepts); its content
// ID, consumer.ContentID(gen, type, key, payload) with the type and key from
// its metadata ([MetadataMessageType], [MetadataMessageKey]) — the content
// ID our consumers give a message without an ID. Two different messages
// with the same type, key and payload then share an ID, which is why
// producers should set IDs ([NewMessage]).
func MessageID(gen *forge.Generator, msg *message.Message) (uuid.UUID, error) {
	if s := msg.Metadata.Get(MetadataMessageID); s != "" {
		if id, err := uuid.Parse(s); err == nil && id != uuid.Nil {
			return id, nil
		}
	}
	if msg.UUID != "" {
		if id, err := uuid.Parse(msg.UUID); err == nil && id != uuid.Nil {
			return id, nil
		}
	}
	var key []byte
	if k, ok := msg.Metadata[MetadataMessageKey]; ok {
		key = []byte(k)
	}
	id, err := consumer.ContentID(gen, msg.Metadata.Get(MetadataMessageType), key, msg.Payload)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %w", ErrNoID, err)
	}
	return id, nil
}

// Deduplicator is a Watermill router middleware that runs a handler once
// per message ID and scope, with any dedupe.Store: memory, Redis,
// PostgreSQL (with its transactional inbox) or bbolt, shared by every
// process that consumes the stream. Unlike Watermill's own
// middleware.Deduplicator it records a message as done only after the
// handler succeeded: a failing handler releases its claim, so the
// redelivery is processed rather than dropped.
//
// For each message, [Deduplicator.Middleware] claims (scope, ID):
//
//   - duplicate (done earlier, within retention): the handler is skipped
//     and the message acked;
//   - in flight (another consumer holds the claim): the handler is skipped
//     and an error matching consumer.ErrInFlight (a *consumer.InFlightError)
//     returned, so the router nacks and the message is delivered again
//     after the holder's lease — never acked, never dropped. Messages from
//     this module's subscribers return at once (the subscriber's loop
//     waits, with backoff, at most until the lease end); with another
//     subscriber the middleware waits in place the same way and claims
//     again, returning the error only when the message's context ends;
//   - acquired: the handler runs. On error the claim is released and the
//     error returned. On success the claim is completed — when the router
//     acks the message, after it published the messages the handler
//     produced, so a failed publish leaves the message to be processed
//     again rather than recorded done without its output. With this
//     module's subscribers the completion is stored before the broker
//     acknowledgement (a completion that fails keeps the message
//     unacknowledged); with another subscriber a handler that produced no
//     message is completed before the middleware returns, and one that did
//     is completed when the router acks it.
//
// Store errors return an error matching consumer.ErrStore: the message is
// nacked and waits for the store.
//
// With a store that implements dedupe.Inbox (pgstore) the handler runs
// inside the inbox transaction: it does its writes through
// pgstore.TxFromContext(msg.Context()), and they commit together with the
// completion — when the router acks the message, as above — or roll back
// on error or nack.
//
// Place it outside Watermill's Retry middleware (router.AddMiddleware adds
// outermost first): each retry then claims afresh. Two Deduplicators of one
// scope in a chain wait for each other forever. A Deduplicator is safe for
// concurrent use if its store is.
type Deduplicator struct {
	store dedupe.Store
	inbox dedupe.Inbox
	cfg   config

	mu      sync.Mutex
	pending map[dedupe.Key]chan struct{} // claims settled when the router acks or nacks
}

// NewDeduplicator returns a middleware that deduplicates with store. It
// does no I/O.
func NewDeduplicator(store dedupe.Store, opts ...Option) (*Deduplicator, error) {
	if store == nil {
		return nil, errors.New("wmforge: nil store")
	}
	var cfg config
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("wmforge: %w", err)
		}
	}
	if _, err := dedupe.LeaseOrDefault(cfg.lease, dedupe.DefaultLease); err != nil {
		return nil, fmt.Errorf("wmforge: WithLease: %w", err)
	}
	if cfg.gen == nil {
		g, err := forge.New(consumer.DefaultContentNamespace)
		if err != nil {
			return nil, fmt.Errorf("wmforge: content generator: %w", err)
		}
		cfg.gen = g
	}
	if cfg.key == nil {
		gen := cfg.gen
		cfg.key = func(m *message.Message) (uuid.UUID, error) { return MessageID(gen, m) }
	}
	d := &Deduplicator{store: store, cfg: cfg, pending: map[dedupe.Key]chan struct{}{}}
	if in, ok := store.(dedupe.Inbox); ok && !cfg.noInbox {
		d.inbox = in
	}
	return d, nil
}

// Middleware is the message.HandlerMiddleware: router.AddMiddleware(d.Middleware).
func (d *Deduplicator) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		scope := d.cfg.scope
		if scope == "" {
			if scope = message.HandlerNameFromCtx(msg.Context()); scope == "" {
				return nil, ErrNoScope
			}
		}
		id, err := d.cfg.key(msg)
		if err != nil {
			return nil, fmt.Errorf("wmforge: message %q: %w", msg.UUID, err)
		}
		key := dedupe.Key{Scope: scope, ID: id}
		if err := key.Validate(); err != nil {
			return nil, fmt.Errorf("wmforge: message %q: %w", msg.UUID, err)
		}
		hook := ackhook.FromContext(msg.Context())
		if d.inbox != nil {
			return d.process(h, msg, key, hook)
		}
		return d.claim(h, msg, key, hook)
	}
}

// storeError matches consumer.ErrStore and the store's own error.
func storeError(op string, key dedupe.Key, err error) error {
	return fmt.Errorf("wmforge: %s %s: %w: %w", op, key, consumer.ErrStore, err)
}

func (d *Deduplicator) claim(h message.HandlerFunc, msg *message.Message, key dedupe.Key, hook *ackhook.Hook) ([]*message.Message, error) {
	ctx := msg.Context()
	var c dedupe.Claim
	var poll time.Duration
	for {
		var err error
		c, err = d.store.Claim(ctx, key, d.cfg.lease)
		if err != nil {
			return nil, nack(hook, storeError("claim", key, err))
		}
		if c.Status != dedupe.InFlight {
			break
		}
		if d.awaitPending(ctx, key) {
			continue
		}
		if e := (&consumer.InFlightError{ID: key.ID, Until: c.Until}); hook != nil || !waitInFlight(ctx, &poll, c.Until) {
			return nil, nack(hook, e)
		}
	}
	switch c.Status {
	case dedupe.Duplicate:
		return nil, nil
	case dedupe.Acquired:
	default:
		return nil, nack(hook, storeError("claim", key, fmt.Errorf("unexpected status %s", c.Status)))
	}
	release := func() { _ = d.store.Release(context.WithoutCancel(ctx), c) }
	done := false
	defer func() {
		if !done { // the handler panicked: give the claim back, keep panicking
			release()
		}
	}()
	produced, herr := h(msg)
	done = true
	if herr != nil {
		release()
		return produced, nack(hook, herr)
	}
	finish := func(ack bool) error {
		if !ack {
			release()
			return nil
		}
		if err := complete(ctx, d.store, c, d.cfg.retention); err != nil {
			return storeError("complete", key, err)
		}
		return nil
	}
	return produced, d.settle(msg, key, hook, len(produced) > 0, c.Until, finish)
}

// settle arranges for finish to run when the message is acked or nacked:
// through the subscriber's hook, at once when nothing is left for the
// router to publish, or when the router acks or nacks.
func (d *Deduplicator) settle(msg *message.Message, key dedupe.Key, hook *ackhook.Hook, produced bool, until time.Time, finish func(ack bool) error) error {
	if hook != nil && hook.Defer(func() error { return finish(true) }, func() { _ = finish(false) }) {
		return nil
	}
	if !produced {
		if err := finish(true); err != nil {
			return nack(hook, err)
		}
		return nil
	}
	wait := time.Until(until)
	if until.IsZero() || wait <= 0 {
		wait = d.leaseOrDefault()
	}
	settled := make(chan struct{})
	d.mu.Lock()
	d.pending[key] = settled
	d.mu.Unlock()
	go func() {
		defer func() {
			d.mu.Lock()
			if d.pending[key] == settled {
				delete(d.pending, key)
			}
			d.mu.Unlock()
			close(settled)
		}()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-msg.Acked():
			_ = finish(true)
		case <-msg.Nacked():
			_ = finish(false)
		case <-t.C: // never settled: the lease is over anyway
			_ = finish(false)
		}
	}()
	return nil
}

// awaitPending waits until this middleware's own claim of key, waiting for
// the router's ack or nack, is settled, and reports whether there was one:
// a message nacked after its handler succeeded is redelivered at once by
// most Pub/Subs, before its claim is released.
func (d *Deduplicator) awaitPending(ctx context.Context, key dedupe.Key) bool {
	d.mu.Lock()
	settled, ok := d.pending[key]
	d.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-settled:
		return true
	case <-ctx.Done():
		return false
	}
}

func (d *Deduplicator) leaseOrDefault() time.Duration {
	l, _ := dedupe.LeaseOrDefault(d.cfg.lease, dedupe.DefaultLease)
	return l
}

// nack records err as the reason of the coming nack and returns it.
func nack(hook *ackhook.Hook, err error) error {
	if hook != nil {
		hook.SetErr(err)
	}
	return err
}

// waitInFlight waits before claiming a message held elsewhere again: an
// exponential backoff from 10 ms to 1 s, never past the holder's lease end
// (until), as our consumer loops wait. It reports false when ctx ended.
func waitInFlight(ctx context.Context, poll *time.Duration, until time.Time) bool {
	*poll = min(max(2**poll, 10*time.Millisecond), time.Second)
	wait := *poll
	if d := time.Until(until); d >= 0 && d < wait {
		wait = d + time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// complete stores c's completion, retrying a passing store failure with the
// same claim while its lease lasts: the handler's work is done, and running
// it again would repeat its effects.
func complete(ctx context.Context, store dedupe.Store, c dedupe.Claim, retention time.Duration) error {
	bg := context.WithoutCancel(ctx)
	wait := 10 * time.Millisecond
	for {
		err := store.Complete(bg, c, retention)
		if err == nil || errors.Is(err, dedupe.ErrLeaseLost) || errors.Is(err, dedupe.ErrNotAcquired) ||
			errors.Is(err, dedupe.ErrInvalidKey) || errors.Is(err, dedupe.ErrInvalidDuration) || errors.Is(err, dedupe.ErrClosed) {
			return err
		}
		if c.Until.IsZero() || time.Until(c.Until) < wait+50*time.Millisecond {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// errNacked rolls back an inbox transaction whose message was nacked after
// its handler succeeded (the router could not publish what it produced).
var errNacked = errors.New("wmforge: message nacked")

type handled struct {
	produced []*message.Message
	err      error
	panicked bool
	panicVal any
}

// process runs the handler inside the inbox transaction, which stays open
// until the message is acked (commit with the completion) or nacked
// (rollback and release).
func (d *Deduplicator) process(h message.HandlerFunc, msg *message.Message, key dedupe.Key, hook *ackhook.Hook) ([]*message.Message, error) {
	orig := msg.Context()
	ran := make(chan handled, 1)
	decide := make(chan bool, 1)
	done := make(chan struct{})
	var (
		claim dedupe.Claim
		perr  error
	)
	go func() {
		defer close(done)
		// The transaction must survive the end of the message's context
		// (some subscribers cancel it on Ack, before the commit).
		claim, perr = d.inbox.Process(context.WithoutCancel(orig), key, d.cfg.lease, d.cfg.retention, func(tx context.Context) error {
			r := runHandler(h, msg, tx, orig)
			ran <- r
			switch {
			case r.panicked:
				return fmt.Errorf("wmforge: handler panicked: %v", r.panicVal)
			case r.err != nil:
				return r.err
			}
			if <-decide {
				return nil
			}
			return errNacked
		})
	}()
	select {
	case r := <-ran:
		if r.err != nil || r.panicked {
			<-done
			if r.panicked {
				panic(r.panicVal)
			}
			return r.produced, nack(hook, r.err)
		}
		finish := func(ack bool) error {
			decide <- ack
			<-done
			if !ack {
				return nil
			}
			switch {
			case perr == nil:
				return nil
			case errors.Is(perr, dedupe.ErrRolledBack):
				// The handler's own writes kept the transaction from
				// committing: its failure, retried like any.
				return fmt.Errorf("wmforge: inbox: message %s: %w", key.ID, perr)
			}
			return storeError("process", key, perr)
		}
		return r.produced, d.settle(msg, key, hook, len(r.produced) > 0, time.Now().Add(d.leaseOrDefault()), finish)
	case <-done:
	}
	// The handler did not run.
	if perr != nil {
		return nil, nack(hook, storeError("process", key, perr))
	}
	switch claim.Status {
	case dedupe.Duplicate:
		return nil, nil
	case dedupe.InFlight:
		if d.awaitPending(orig, key) {
			return d.process(h, msg, key, hook)
		}
		var poll time.Duration
		if hook == nil && waitInFlight(orig, &poll, claim.Until) {
			return d.process(h, msg, key, hook)
		}
		return nil, nack(hook, &consumer.InFlightError{ID: key.ID, Until: claim.Until})
	}
	return nil, nack(hook, storeError("process", key, fmt.Errorf("status %s without running the handler", claim.Status)))
}

// runHandler calls h with msg's context set to the inbox transaction's,
// cancelled when the message's own context ends, and restores it after.
// The context is not cancelled when h returns: messages h produced with it
// (wmforge.NewMessageContext) are published with it afterwards.
func runHandler(h message.HandlerFunc, msg *message.Message, tx, orig context.Context) (r handled) {
	ctx, cancel := context.WithCancel(tx)
	context.AfterFunc(orig, cancel)
	msg.SetContext(ctx)
	defer func() {
		msg.SetContext(orig)
		if v := recover(); v != nil {
			r = handled{panicked: true, panicVal: v}
		}
	}()
	r.produced, r.err = h(msg)
	return r
}
