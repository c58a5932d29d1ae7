package rabbitsub

import (
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// acker settles the deliveries of one channel. Their delivery tags are 1,
// 2, 3… in the order the broker sent them (the channel carries one
// consumer and nothing else). It acks the deliveries of a batch with one
// basic.ack (multiple=true) when that is provably safe — every delivery up
// to the batch's last tag is settled, so the one ack covers exactly the
// batch's own unacked deliveries — and one by one otherwise: a delivery
// another worker still holds below them is never acked by a multiple ack,
// and theirs never wait for it. Frames are sent under the lock, in the
// order the decisions are made. Safe for concurrent use.
type acker struct {
	ch amqp.Acknowledger // the consumer's channel

	mu      sync.Mutex
	floor   uint64          // every tag up to floor is settled
	settled map[uint64]bool // settled tags above floor; true: to be acked by the next multiple ack
}

func newAcker(ch amqp.Acknowledger) *acker {
	return &acker{ch: ch, settled: map[uint64]bool{}}
}

// ack acks the deliveries with tags.
func (a *acker) ack(tags ...uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range tags {
		a.settled[t] = true
	}
	var last uint64 // the highest tag to ack at or below the new floor
	for {
		pending, ok := a.settled[a.floor+1]
		if !ok {
			break
		}
		delete(a.settled, a.floor+1)
		a.floor++
		if pending {
			last = a.floor
		}
	}
	var err error
	if last > 0 {
		err = a.ch.Ack(last, true)
	}
	for _, t := range tags {
		if t > a.floor { // a delivery below it is still held: this one alone
			a.settled[t] = false
			if aerr := a.ch.Ack(t, false); aerr != nil && err == nil {
				err = aerr
			}
		}
	}
	return err
}

// nack hands the delivery with tag back (requeue) or rejects it.
func (a *acker) nack(tag uint64, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.ch.Nack(tag, false, requeue)
	if tag <= a.floor {
		return err
	}
	a.settled[tag] = false
	for {
		if _, ok := a.settled[a.floor+1]; !ok {
			break
		}
		delete(a.settled, a.floor+1)
		a.floor++
	}
	return err
}
