package rabbitpub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/internal/retry"
)

// PublishBatch publishes msgs with pipelined confirms: every message is sent
// on one channel without waiting, then the confirms are collected. It returns
// nil once the broker has acked all of them. Messages that were nacked, lost
// with a channel or not confirmed in time are published again (same IDs)
// until ctx ends.
//
// Every message is validated first: if any is invalid, nothing is sent and
// the error wraps [publisher.ErrInvalid], naming the first invalid message by
// its index ("rabbitpub: batch message 2: ..."). Otherwise the error, if any, joins
// one [*publisher.PublishError] per failed message (unroutable ones wrap
// [publisher.ErrUnroutable], refusals [rabbitmq.ErrRefused]); the other
// messages were confirmed.
func (p *Publisher) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	prep := make([]prepared, len(msgs))
	ptrs := make([]*prepared, len(msgs))
	for i := range msgs {
		m, err := p.prepare(ctx, &msgs[i], now)
		if err != nil {
			return fmt.Errorf("rabbitpub: batch message %d: %w", i, err)
		}
		prep[i] = m
		ptrs[i] = &prep[i]
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()

	// Every message is started (the observer sees each) and checked before
	// any is sent: one that fails the checks fails the batch.
	var obs []*observation
	if p.set.Observer != nil {
		obs = make([]*observation, len(prep))
	}
	var limit int
	for i := range prep {
		o, err := p.begin(ctx, &prep[i], len(prep), now, &limit)
		if err == nil {
			if obs != nil {
				obs[i] = o
			}
			continue
		}
		err = fmt.Errorf("rabbitpub: batch message %d: %w", i, err)
		if obs != nil {
			for _, o := range obs[:i] {
				o.done(err)
			}
		}
		return err
	}

	todo := make([]int, len(msgs))
	for i := range todo {
		todo[i] = i
	}
	last := make([]error, len(msgs))
	cause := make([]error, len(msgs)) // the last failure that was not the context ending
	var failed []error
	var bo backoff.BackOff
	for attempt := 1; ; attempt++ {
		if obs != nil {
			for _, i := range todo {
				obs[i].pub.Attempts++
			}
		}
		failedNow := p.batchRound(ctx, ptrs, todo, last)
		if obs != nil {
			p.observeRound(obs, todo, failedNow)
		}
		var next []int
		for _, i := range failedNow {
			if cause[i] == nil || ctx.Err() == nil || !errors.Is(last[i], ctx.Err()) {
				cause[i] = last[i]
			}
			if isPermanent(last[i]) {
				err := &publisher.PublishError{Transport: "rabbitpub", MessageID: prep[i].lin.MessageID, Attempts: attempt, Err: last[i]}
				failed = append(failed, err)
				if obs != nil {
					obs[i].done(err)
				}
				continue
			}
			next = append(next, i)
		}
		todo = next
		if len(todo) == 0 {
			return errors.Join(failed...)
		}
		if bo == nil {
			bo = p.set.NewBackOff()
		}
		p.retries.Add(int64(len(todo)))
		if obs != nil {
			for _, i := range todo {
				obs[i].retry(last[i])
			}
		}
		if werr := retry.Wait(ctx, bo); werr != nil {
			for _, i := range todo {
				err := &publisher.PublishError{Transport: "rabbitpub", MessageID: prep[i].lin.MessageID, Attempts: attempt, Err: retry.JoinCtx("rabbitpub", werr, cause[i])}
				failed = append(failed, err)
				if obs != nil {
					obs[i].done(err)
				}
			}
			return errors.Join(failed...)
		}
	}
}

// observeRound reports PublishDone for the messages of todo that were
// confirmed in this round (those not in failed, which batchRound lists in
// no particular order).
func (p *Publisher) observeRound(obs []*observation, todo, failed []int) {
	bad := make(map[int]bool, len(failed))
	for _, i := range failed {
		bad[i] = true
	}
	for _, i := range todo {
		if !bad[i] {
			obs[i].done(nil)
		}
	}
}

// batchRound makes one attempt at publishing msgs[i] for i in todo, records
// each failure in last and returns the indexes that failed.
func (p *Publisher) batchRound(ctx context.Context, msgs []*prepared, todo []int, last []error) []int {
	dcs := make([]*amqp.DeferredConfirmation, len(todo))
	ch, sent, err := p.send(ctx, msgs, todo, dcs)
	var failed []int
	for _, i := range todo[sent:] {
		last[i] = err
		failed = append(failed, i)
	}
	if sent == 0 {
		return failed
	}
	t := time.NewTimer(p.cfg.confirmTimeout)
	defer t.Stop()
	for k, i := range todo[:sent] {
		if dcs[k] == nil { // too big for this connection's frames
			last[i] = frameError(msgs[i], ch.conn.frameMax)
			failed = append(failed, i)
			continue
		}
		select {
		case <-dcs[k].Done():
			if err := p.outcome(ch, dcs[k], msgs[i]); err != nil {
				last[i] = err
				failed = append(failed, i)
			}
			continue
		case <-t.C:
			err = errConfirmTimout
		case <-ctx.Done():
			err = ctx.Err()
		}
		// Gave up waiting: this one and every later one not yet confirmed.
		for k2 := k; k2 < sent; k2++ {
			i2, e := todo[k2], err
			if dcs[k2] == nil {
				e = frameError(msgs[i2], ch.conn.frameMax)
			} else if dcs[k2].Acked() {
				if e = p.outcome(ch, dcs[k2], msgs[i2]); e == nil {
					continue
				}
			}
			last[i2] = e
			failed = append(failed, i2)
		}
		return failed
	}
	return failed
}
