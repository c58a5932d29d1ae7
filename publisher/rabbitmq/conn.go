package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/publisher"
)

// conn is one AMQP connection and what the publisher watches on it.
type conn struct {
	c      *amqp.Connection
	closed chan struct{} // closed when the connection is lost or closed

	mu      sync.Mutex
	blocked chan struct{} // non-nil while the broker blocks publishing; closed on unblock
}

type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
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
		d := &dialCall{done: make(chan struct{})}
		p.dialing = d
		go p.dial(d)
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

func (p *Publisher) dial(d *dialCall) {
	ac, err := p.cfg.dial(p.url, p.cfg.amqpConfig)
	if err == nil {
		d.c = &conn{c: ac, closed: make(chan struct{})}
		closes := ac.NotifyClose(make(chan *amqp.Error, 1))
		blocks := ac.NotifyBlocked(make(chan amqp.Blocking, 4))
		go d.c.watch(closes, blocks)
	} else {
		d.err = fmt.Errorf("dial: %w", err)
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

// channel is one AMQP channel in confirm mode with its confirm loop.
type channel struct {
	ch   *amqp.Channel
	conn *conn

	mu      sync.Mutex
	pending map[uint64]waiter
	dead    bool
	cause   error
}

type waiter struct {
	id  string
	idx int
	out chan result
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
	ch := &channel{ch: ach, conn: c, pending: make(map[uint64]waiter)}
	closes := ach.NotifyClose(make(chan *amqp.Error, 1))
	returns := ach.NotifyReturn(make(chan amqp.Return, 64))
	confirms := ach.NotifyPublish(make(chan amqp.Confirmation, 1024))
	go ch.confirmLoop(confirms, returns, closes)
	return ch, nil
}

func (c *channel) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead || c.ch.IsClosed()
}

// register records that the message published with delivery tag tag is
// waited for on out.
func (c *channel) register(tag uint64, id string, idx int, out chan result) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return &ChannelClosedError{Cause: c.cause}
	}
	c.pending[tag] = waiter{id: id, idx: idx, out: out}
	return nil
}

// unregister removes tag after a failed publish; it reports whether the
// waiter was still pending (false: a result was already delivered).
func (c *channel) unregister(tag uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[tag]
	delete(c.pending, tag)
	return ok
}

// confirmLoop delivers each confirm to its waiter. Returns and confirms
// arrive on two Go channels, but the client sends a basic.return to its
// listener before it processes the basic.ack of the same message (RabbitMQ
// sends the return first on the channel), so draining the returns before
// handling a confirm sees every return that belongs to it.
func (c *channel) confirmLoop(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	returned := make(map[string]int)
	drain := func() {
		for {
			select {
			case r, ok := <-returns:
				if !ok {
					returns = nil
					return
				}
				returned[r.MessageId]++
			default:
				return
			}
		}
	}
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			returned[r.MessageId]++
		case cf, ok := <-confirms:
			if !ok {
				var cause error = amqp.ErrClosed
				select {
				case e := <-closes:
					if e != nil {
						cause = e
					}
				default:
				}
				c.fail(cause)
				return
			}
			drain()
			c.mu.Lock()
			w, found := c.pending[cf.DeliveryTag]
			delete(c.pending, cf.DeliveryTag)
			c.mu.Unlock()
			if !found {
				continue
			}
			var err error
			if n := returned[w.id]; n > 0 {
				if n == 1 {
					delete(returned, w.id)
				} else {
					returned[w.id] = n - 1
				}
				err = publisher.ErrUnroutable
			}
			if !cf.Ack {
				err = errNack
			}
			w.out <- result{idx: w.idx, err: err}
		}
	}
}

// fail marks the channel dead and fails every pending waiter.
func (c *channel) fail(cause error) {
	c.mu.Lock()
	c.dead = true
	c.cause = cause
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, w := range pending {
		w.out <- result{idx: w.idx, err: &ChannelClosedError{Cause: cause}}
	}
}
