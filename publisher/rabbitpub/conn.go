package rabbitpub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// conn is one AMQP connection and what the publisher watches on it.
type conn struct {
	c        *amqp.Connection
	frameMax int           // negotiated frame_max (rabbitmq.FrameMax)
	closed   chan struct{} // closed when the connection is lost or closed

	mu      sync.Mutex
	blocked chan struct{} // non-nil while the broker blocks publishing; closed on unblock
}

type dialCall struct {
	done   chan struct{}
	cancel context.CancelFunc // Close ends a dial still running
	c      *conn
	err    error
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *conn) watch(closes chan *amqp.Error, blocks chan amqp.Blocking) {
	for {
		select {
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			c.mu.Lock()
			if b.Active && c.blocked == nil {
				c.blocked = make(chan struct{})
			} else if !b.Active && c.blocked != nil {
				close(c.blocked)
				c.blocked = nil
			}
			c.mu.Unlock()
		case <-closes:
			// The first value (or the close of the channel) means the
			// connection is gone.
			close(c.closed)
			c.mu.Lock()
			if c.blocked != nil {
				close(c.blocked)
				c.blocked = nil
			}
			c.mu.Unlock()
			return
		}
	}
}

// waitUnblocked returns once the broker accepts publishes on c, or with an
// error when ctx ends first: a publish never hangs on a blocked connection
// past its context.
func (c *conn) waitUnblocked(ctx context.Context) error {
	c.mu.Lock()
	b := c.blocked
	c.mu.Unlock()
	if b == nil {
		return nil
	}
	select {
	case <-b:
		return nil
	case <-c.closed:
		return errors.New("connection closed while blocked")
	case <-ctx.Done():
		return fmt.Errorf("connection blocked by the broker: %w", ctx.Err())
	}
}

// connection returns the live connection, dialing a new one when there is
// none. Concurrent callers share one dial; each waits only as long as its
// context allows.
func (p *Publisher) connection(ctx context.Context) (*conn, error) {
	p.mu.Lock()
	if p.cur != nil && !p.cur.isClosed() {
		c := p.cur
		p.mu.Unlock()
		return c, nil
	}
	if p.dialing == nil {
		// The dial is shared by every caller, so no caller's context
		// bounds it: amqp091-go's connection timeout does, and Close.
		dctx, cancel := context.WithCancel(context.Background())
		d := &dialCall{done: make(chan struct{}), cancel: cancel}
		p.dialing = d
		go p.dial(dctx, d)
	}
	d := p.dialing
	p.mu.Unlock()
	select {
	case <-d.done:
		if d.err != nil {
			return nil, d.err
		}
		return d.c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("connecting: %w", ctx.Err())
	}
}

func (p *Publisher) dial(ctx context.Context, d *dialCall) {
	defer d.cancel()
	ac, _, err := p.eps.Dial(ctx)
	if err == nil {
		if err = p.declare(ac); err != nil {
			_ = ac.Close()
		}
	}
	if err == nil {
		d.c = &conn{c: ac, frameMax: rabbitmq.FrameMax(ac), closed: make(chan struct{})}
		closes := ac.NotifyClose(make(chan *amqp.Error, 1))
		blocks := ac.NotifyBlocked(make(chan amqp.Blocking, 4))
		go d.c.watch(closes, blocks)
		p.frameMax.Store(int64(d.c.frameMax))
	} else {
		d.err = err
	}
	p.mu.Lock()
	p.dialing = nil
	if d.c != nil {
		if p.shut {
			// Close ran while dialing (a caller gave up waiting).
			_ = d.c.c.Close()
			d.c, d.err = nil, publisher.ErrClosed
		} else {
			p.cur = d.c
		}
	}
	p.mu.Unlock()
	close(d.done)
}

// declare declares the topology on a fresh connection, before any publish.
func (p *Publisher) declare(ac *amqp.Connection) error {
	if p.cfg.topology.IsZero() {
		return nil
	}
	ch, err := ac.Channel()
	if err != nil {
		return fmt.Errorf("topology: open channel: %w", err)
	}
	if err := p.cfg.topology.Declare(ch); err != nil {
		return rabbitmq.ClassifyDeclaration(err)
	}
	return ch.Close()
}

// channel is one AMQP channel in confirm mode.
//
// Confirms are awaited through the client's DeferredConfirmation of each
// publishing, which wakes the waiting goroutine directly. Returns (of
// mandatory messages no queue took) are matched by message ID: RabbitMQ sends
// a message's basic.return before its basic.ack on the same channel, and the
// client's reader goroutine hands the return to our buffered returns channel
// before it completes the ack. So a waiter that sees its confirm done and
// then drains the returns channel sees every return that belongs to it.
// Draining is done by whoever holds mu: waiters after each confirm and
// senders before each publish, so the buffer never fills while messages are
// in flight.
type channel struct {
	ch   *amqp.Channel
	conn *conn

	mu       sync.Mutex
	returns  chan amqp.Return
	returned map[string]int // message ID -> returns not yet matched to an ack
	closes   chan *amqp.Error
	cause    error
}

// returnsBuffer bounds the returns received between two drains.
const returnsBuffer = 4096

// openChannelContext opens a channel, giving up when ctx ends: the
// channel.open and confirm.select round trips have no timeout of their own
// and would otherwise wait for a hung broker until the heartbeat fails.
func (c *conn) openChannelContext(ctx context.Context) (*channel, error) {
	type opened struct {
		ch  *channel
		err error
	}
	res := make(chan opened) // unbuffered: delivered only to a caller still waiting
	abandoned := make(chan struct{})
	go func() {
		ch, err := c.openChannel()
		select {
		case res <- opened{ch, err}:
		case <-abandoned:
			if ch != nil {
				_ = ch.ch.Close()
			}
		}
	}()
	select {
	case r := <-res:
		return r.ch, r.err
	case <-ctx.Done():
		close(abandoned)
		return nil, fmt.Errorf("open channel: %w", ctx.Err())
	case <-c.closed:
		close(abandoned)
		return nil, errors.New("open channel: connection closed")
	}
}

func (c *conn) openChannel() (*channel, error) {
	ach, err := c.c.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ach.Confirm(false); err != nil {
		_ = ach.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	return &channel{
		ch:       ach,
		conn:     c,
		returns:  ach.NotifyReturn(make(chan amqp.Return, returnsBuffer)),
		returned: make(map[string]int),
		closes:   ach.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

func (c *channel) isDead() bool { return c.ch.IsClosed() }

// drainLocked moves the returns received so far into c.returned.
func (c *channel) drainLocked() {
	for {
		select {
		case r, ok := <-c.returns:
			if !ok {
				return
			}
			c.returned[r.MessageId]++
		default:
			return
		}
	}
}

func (c *channel) drain() {
	c.mu.Lock()
	c.drainLocked()
	c.mu.Unlock()
}

// closeCause returns why the channel closed. The client delivers the error
// to NotifyClose listeners before it fails the pending confirms, so it is
// available to a waiter whose confirm was failed by the close.
func (c *channel) closeCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause == nil {
		select {
		case e, ok := <-c.closes:
			if ok && e != nil {
				c.cause = e
			}
		default:
		}
	}
	if c.cause == nil {
		return amqp.ErrClosed
	}
	return c.cause
}

// outcome returns the result of a publishing whose confirm is done.
func (c *channel) outcome(dc *amqp.DeferredConfirmation, id string) error {
	if !dc.Acked() {
		if c.ch.IsClosed() {
			return &ChannelClosedError{Cause: c.closeCause()}
		}
		return errNack
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainLocked()
	switch n := c.returned[id]; n {
	case 0:
		return nil
	case 1:
		delete(c.returned, id)
	default:
		c.returned[id] = n - 1
	}
	return publisher.ErrUnroutable
}
