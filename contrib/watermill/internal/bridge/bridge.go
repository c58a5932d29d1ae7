// Package bridge runs our consumer loops behind Watermill's
// message.Subscriber: a consumer.Handler that hands each delivery to a
// subscription's output channel and waits for the Watermill handler's Ack
// or Nack, and the bookkeeping of a subscriber's running subscriptions.
// The transport adapters (wmrabbit, wmkafka) share it.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/ackhook"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/dedupe"
)

// ErrNacked is wrapped by the error the consumer loop sees for a message the
// Watermill side nacked without a reason (a reason comes from
// wmforge.Deduplicator: the handler's error, an in-flight claim, a store
// failure). Its text names no package: the handler puts the name of the
// adapter whose subscription delivered the message (wmrabbit, wmkafka) in
// front of it, as of every error it returns.
var ErrNacked = errors.New("nacked by the Watermill handler")

// ErrClosed is returned by [Subscriptions.Start] on a closed subscriber. The
// adapters return their own ErrClosed in its place, so it names no package.
var ErrClosed = errors.New("subscriber closed")

// handler hands deliveries to out until ctx (the subscription's) ends.
type handler struct {
	name       string // the adapter's package name, the prefix of every error
	ctx        context.Context
	out        chan<- *message.Message
	deadLetter bool
}

// Handle implements consumer.Handler.
func (b *handler) Handle(ctx context.Context, m *consumer.Message) error {
	hook := &ackhook.Hook{}
	mctx, cancel := context.WithCancel(ackhook.NewContext(ctx, hook))
	defer cancel() // the message's context ends once it is settled
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	msg := wmforge.WatermillMessage(mctx, m)
	select {
	case b.out <- msg:
	case <-mctx.Done():
		return fmt.Errorf("%s: subscription ended before the message was taken: %w", b.name, context.Cause(mctx))
	}
	select {
	case <-msg.Acked():
		return hook.Acked()
	case <-msg.Nacked():
		return b.nackError(hook.Nacked())
	case <-mctx.Done():
		select {
		case <-msg.Acked(): // settled at the same moment: the Ack wins
			return hook.Acked()
		default:
		}
		_ = hook.Nacked()
		return fmt.Errorf("%s: subscription ended before the message was acked: %w", b.name, context.Cause(mctx))
	}
}

// nackError is what the consumer loop gets for a nack: the reason, which
// for a Waiting error makes it wait for a lease or the store; by default a
// Permanent reason loses its mark, so that a nack never dead-letters. A
// reason is returned as it is (it carries its own package's name); the
// errors made here start with the adapter's.
func (b *handler) nackError(reason error) error {
	switch {
	case reason == nil:
		return fmt.Errorf("%s: %w", b.name, ErrNacked)
	case !b.deadLetter && consumer.IsPermanent(reason):
		return fmt.Errorf("%s: %w: %s", b.name, ErrNacked, reason.Error())
	}
	return reason
}

// Runner is a consumer loop: rabbitsub.Consumer, kafkasub.Consumer.
type Runner interface {
	// Run consumes until ctx ends or the loop fails.
	Run(ctx context.Context) error
}

// Config is what both adapters' subscribers share.
type Config struct {
	// Consumer holds the caller's options for the consumer loop.
	Consumer []consumer.Option
	// Store enables deduplication in the consumer loop, with a scope per
	// subscription.
	Store dedupe.Store
	// DeadLetterAfter, when positive, dead-letters a message after that
	// many nacks; 0 redelivers without limit.
	DeadLetterAfter int
	// Logger receives the loop's restarts.
	Logger *slog.Logger
}

// Options returns the consumer options of a subscription whose dedupe scope
// is scope: the redelivery policy first, so the caller's options can
// override it, then the caller's, then deduplication.
func (c *Config) Options(scope string) []consumer.Option {
	opts := make([]consumer.Option, 0, len(c.Consumer)+2)
	if c.DeadLetterAfter > 0 {
		opts = append(opts, consumer.WithMaxAttempts(c.DeadLetterAfter))
	} else {
		opts = append(opts, consumer.WithMaxAttempts(math.MaxInt))
	}
	opts = append(opts, c.Consumer...)
	if c.Store != nil {
		opts = append(opts, consumer.WithDedupe(c.Store, scope))
	}
	return opts
}

// Subscriptions tracks the subscriptions of one subscriber. The zero value
// is ready to use; it is safe for concurrent use.
type Subscriptions struct {
	mu      sync.Mutex
	closed  bool
	cancels map[int]context.CancelFunc
	next    int
	wg      sync.WaitGroup
}

// Start runs the consumer loop newRunner builds around the handing-off
// handler until ctx ends or the subscriber closes, restarting it after
// backoff when it fails, and returns the subscription's output channel,
// closed when the loop has stopped. name is the adapter's package name
// (wmrabbit, wmkafka): it starts the handler's errors and the restart log
// line.
func (s *Subscriptions) Start(ctx context.Context, cfg *Config, name string, backoff time.Duration, newRunner func(consumer.Handler) (Runner, error)) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make(chan *message.Message)
	sctx, cancel := context.WithCancel(ctx)
	r, err := newRunner(&handler{name: name, ctx: sctx, out: out, deadLetter: cfg.DeadLetterAfter > 0})
	if err != nil {
		cancel()
		return nil, err
	}
	if s.cancels == nil {
		s.cancels = map[int]context.CancelFunc{}
	}
	id := s.next
	s.next++
	s.cancels[id] = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.cancels, id)
			s.mu.Unlock()
			cancel()
		}()
		for {
			err := r.Run(sctx)
			if sctx.Err() != nil {
				return
			}
			if cfg.Logger != nil {
				cfg.Logger.WarnContext(sctx, name+": consumer stopped, restarting", "error", err)
			}
			t := time.NewTimer(backoff)
			select {
			case <-sctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	return out, nil
}

// Close ends every subscription and waits until their loops have stopped
// and their output channels are closed. Messages handed out and not yet
// acked are returned to the broker.
func (s *Subscriptions) Close() {
	s.mu.Lock()
	s.closed = true
	for _, cancel := range s.cancels {
		cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
