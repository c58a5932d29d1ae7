package rabbitsub

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

// A worker takes one delivery from the buffer and, with it, every delivery
// already waiting there, up to the batch size: a lone delivery goes at
// once, and a batch never waits to fill. RabbitMQ keeps no per-key order
// across a queue's consumers or a consumer's workers, so the batches need
// none either: which deliveries share a batch is only a question of what
// arrived together.
//
// A batch runs once through consumer.Processor.TryBatch: every member is
// tried once, and a member that fails (or waits for a lease or the store)
// is handed back to the worker instead of being retried in place with the
// others waiting; the others are settled, and the failed members are then
// retried one by one, after a backoff. Every member is acked,
// dead-lettered or handed back by the worker that took it, after TryBatch
// returned (so after its completion is stored).

// delivery is a delivery a worker is processing.
type delivery struct {
	d   *amqp.Delivery
	m   *consumer.Message
	ctx context.Context // from Processor.Begin: the handler's context, passed to End
	err error           // the dead-letter reason of a delivery that never reaches the handler; the last error of a retried one
	raw []byte          // the header table the guard took out of the delivery
}

// work is a worker: it takes batches from buf until stop is done or buf is
// closed (the broker cancelled the consumer, or the connection died).
func (c *Consumer) work(stop, work context.Context, s *session, ch *amqp.Channel, buf <-chan amqp.Delivery) {
	group := make([]amqp.Delivery, 0, c.cfg.batch)
	for {
		group = group[:0]
		select {
		case <-stop.Done():
			return
		case d, ok := <-buf:
			if !ok {
				return
			}
			group = append(group, d)
		}
	fill:
		for len(group) < c.cfg.batch {
			select {
			case d, ok := <-buf:
				if !ok {
					break fill
				}
				group = append(group, d)
			default:
				break fill
			}
		}
		switch {
		case stop.Err() != nil: // stop taking: give them back untouched
			for i := range group {
				_ = s.acks.nack(group[i].DeliveryTag, true)
			}
			return
		case ch.IsClosed():
			// The broker has taken them back already: handling them could
			// not end in an ack.
			continue
		}
		c.process(stop, work, s, group)
	}
}

// process processes a batch of deliveries and acks, dead-letters or hands
// back each of them.
func (c *Consumer) process(stop, work context.Context, s *session, group []amqp.Delivery) {
	xs := make([]delivery, len(group))
	ready := make([]*delivery, 0, len(group))
	var invalid []*delivery
	for i := range group {
		x := &xs[i]
		x.d = &group[i]
		x.m = c.message(x.d)
		x.err = consumer.Identify(x.m, consumer.Identity{
			MessageID:     x.d.MessageId,
			CorrelationID: x.d.CorrelationId,
			CausationID:   tableString(x.d.Headers[lineage.HeaderCausationID]),
		}, c.set.Generator, c.set.MissingID)
		if u, ok := s.guard.take(x.d); ok {
			x.err = fmt.Errorf("rabbitsub: headers unreadable by the AMQP client: %s", u.reason)
			x.raw = u.raw
			delete(x.m.Headers, headerUnreadable)
		}
		x.ctx = c.proc.Begin(work, x.m)
		if x.err != nil {
			invalid = append(invalid, x)
		} else {
			ready = append(ready, x)
		}
	}
	retry := c.batch(stop, work, s, ready)
	for _, x := range invalid {
		c.settle(stop, work, s, x, consumer.OutcomeDeadLetter, x.err)
	}
	for _, x := range retry {
		c.retry(stop, work, s, x)
	}
}

// batch runs xs once each with Processor.TryBatch (claims and completions
// in one round trip each, or one inbox transaction), settles every member
// that ended, and returns the members that failed or wait and must be
// retried alone.
func (c *Consumer) batch(stop, work context.Context, s *session, xs []*delivery) (retry []*delivery) {
	if len(xs) == 1 {
		out, err := c.proc.Process(stop, xs[0].ctx, xs[0].m)
		c.settle(stop, work, s, xs[0], out, err)
		return nil
	}
	ctxs := make([]context.Context, len(xs))
	ms := make([]*consumer.Message, len(xs))
	for i, x := range xs {
		ctxs[i], ms[i] = x.ctx, x.m
	}
	outs, errs := c.proc.TryBatch(stop, work, ctxs, ms)
	done := make([]*delivery, 0, len(xs))
	doneOuts := make([]consumer.Outcome, 0, len(xs))
	doneErrs := make([]error, 0, len(xs))
	for i, x := range xs {
		if outs[i] == consumer.OutcomeRetry {
			x.err = errs[i]
			retry = append(retry, x)
			continue
		}
		done, doneOuts, doneErrs = append(done, x), append(doneOuts, outs[i]), append(doneErrs, errs[i])
	}
	c.settleAll(stop, work, s, done, doneOuts, doneErrs)
	return retry
}

// retry processes a member that failed in its batch on its own, as
// Processor.Process would have after that attempt: after a backoff wait,
// until it succeeds, asks for the dead letter or stop is done.
func (c *Consumer) retry(stop, work context.Context, s *session, x *delivery) {
	t := time.NewTimer(c.proc.Backoff().NextBackOff())
	select {
	case <-stop.Done():
		t.Stop()
		c.settle(stop, work, s, x, consumer.OutcomeAbandon, x.err)
		return
	case <-t.C:
	}
	out, err := c.proc.Process(stop, x.ctx, x.m)
	c.settle(stop, work, s, x, out, err)
}

// settle acks, dead-letters or hands back x as outcome says, then ends it
// with Processor.End.
func (c *Consumer) settle(stop, work context.Context, s *session, x *delivery, outcome consumer.Outcome, err error) {
	d := x.d
	switch outcome {
	case consumer.OutcomeAck:
		if aerr := s.acks.ack(d.DeliveryTag); aerr != nil {
			// The broker redelivers it; dedupe answers duplicate then.
			c.log(x).WarnContext(work, "rabbitsub: ack failed", "error", aerr)
		} else {
			s.progressed()
		}
	case consumer.OutcomeAbandon:
		_ = s.acks.nack(d.DeliveryTag, true)
	case consumer.OutcomeDeadLetter:
		if s.dl == nil {
			if rerr := s.acks.nack(d.DeliveryTag, false); rerr != nil {
				c.log(x).WarnContext(work, "rabbitsub: reject failed", "error", rerr)
			} else {
				s.progressed()
			}
			break
		}
		log := c.log(x)
		if perr := c.publishDeadLetter(stop, work, s.dl, d, x.raw, consumer.Reason(err), x.m.Attempt, log); perr != nil {
			log.ErrorContext(work, "rabbitsub: dead letter not stored, returning the message", "error", perr)
			_ = s.acks.nack(d.DeliveryTag, true)
			outcome, err = consumer.OutcomeAbandon, perr
			break
		}
		if aerr := s.acks.ack(d.DeliveryTag); aerr != nil {
			log.WarnContext(work, "rabbitsub: ack after dead letter failed", "error", aerr)
		} else {
			s.progressed()
		}
	}
	c.proc.End(x.ctx, x.m, outcome, err)
}

// settleAll settles xs[i] as outs[i] says: the acks together (one
// basic.ack where the acker can), then the others one by one.
func (c *Consumer) settleAll(stop, work context.Context, s *session, xs []*delivery, outs []consumer.Outcome, errs []error) {
	tags := make([]uint64, 0, len(xs))
	for i, x := range xs {
		if outs[i] == consumer.OutcomeAck {
			tags = append(tags, x.d.DeliveryTag)
		}
	}
	if len(tags) > 0 {
		aerr := s.acks.ack(tags...)
		for i, x := range xs {
			if outs[i] != consumer.OutcomeAck {
				continue
			}
			if aerr != nil {
				c.log(x).WarnContext(work, "rabbitsub: ack failed", "error", aerr)
			} else {
				s.progressed()
			}
			c.proc.End(x.ctx, x.m, outs[i], errs[i])
		}
	}
	for i, x := range xs {
		if outs[i] != consumer.OutcomeAck {
			c.settle(stop, work, s, x, outs[i], errs[i])
		}
	}
}

// log returns the logger for what happens to x.
func (c *Consumer) log(x *delivery) *slog.Logger {
	return c.set.Logger.With("queue", c.queue, consumer.LogKeyMessageID, x.m.ID.String(), "delivery_tag", x.d.DeliveryTag)
}
