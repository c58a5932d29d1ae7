package rabbitpub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
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
// the error wraps [publisher.ErrInvalid]. Otherwise the error, if any, joins
// one [*publisher.PublishError] per failed message (unroutable ones wrap
// [publisher.ErrUnroutable]); the other messages were confirmed.
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
			return fmt.Errorf("message %d: %w", i, err)
		}
		prep[i] = m
		ptrs[i] = &prep[i]
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()

	todo := make([]int, len(msgs))
	for i := range todo {
		todo[i] = i
	}
	last := make([]error, len(msgs))
	var failed []error
	var bo backoff.BackOff
	for attempt := 1; ; attempt++ {
		failedNow := p.batchRound(ctx, ptrs, todo, last)
		var next []int
		for _, i := range failedNow {
			if errors.Is(last[i], publisher.ErrUnroutable) || isPermanent(last[i]) {
				failed = append(failed, &publisher.PublishError{Transport: "rabbitpub", MessageID: uuid.MustParse(prep[i].id), Attempts: attempt, Err: last[i]})
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
		if werr := retry.Wait(ctx, bo); werr != nil {
			for _, i := range todo {
				failed = append(failed, &publisher.PublishError{Transport: "rabbitpub", MessageID: uuid.MustParse(prep[i].id), Attempts: attempt, Err: retry.JoinCtx(werr, last[i])})
			}
			return errors.Join(failed...)
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
		select {
		case <-dcs[k].Done():
			if err := ch.outcome(dcs[k], msgs[i].id); err != nil {
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
			if dcs[k2].Acked() {
				if e = ch.outcome(dcs[k2], msgs[i2].id); e == nil {
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
