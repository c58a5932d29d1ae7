package dedupe

// memQueue is the FIFO of completed keys of one memory shard, oldest first.
// It is a list of fixed-size blocks so that pushing never copies what is
// queued, and emptied blocks are reused. Not safe for concurrent use: the
// shard's lock guards it.
type memQueue struct {
	head, tail *memBlock
	hi, ti     int // next read index in head, next write index in tail
	n          int
	free       *memBlock
	nfree      int
}

const (
	memBlockLen = 256
	memFreeMax  = 4
)

type memBlock struct {
	items [memBlockLen]memDone
	next  *memBlock
}

func (q *memQueue) alloc() *memBlock {
	if b := q.free; b != nil {
		q.free, b.next = b.next, nil
		q.nfree--
		return b
	}
	return new(memBlock)
}

func (q *memQueue) release(b *memBlock) {
	if q.nfree >= memFreeMax {
		return
	}
	b.next = q.free
	q.free = b
	q.nfree++
}

func (q *memQueue) len() int { return q.n }

func (q *memQueue) push(d memDone) {
	switch {
	case q.tail == nil:
		b := q.alloc()
		q.head, q.tail, q.hi, q.ti = b, b, 0, 0
	case q.ti == memBlockLen:
		b := q.alloc()
		q.tail.next = b
		q.tail, q.ti = b, 0
	}
	q.tail.items[q.ti] = d
	q.ti++
	q.n++
}

func (q *memQueue) peek() (memDone, bool) {
	if q.n == 0 {
		return memDone{}, false
	}
	if q.hi == memBlockLen {
		return q.head.next.items[0], true
	}
	return q.head.items[q.hi], true
}

func (q *memQueue) pop() (memDone, bool) {
	if q.n == 0 {
		return memDone{}, false
	}
	if q.hi == memBlockLen {
		old := q.head
		q.head, q.hi = old.next, 0
		q.release(old)
	}
	d := q.head.items[q.hi]
	q.head.items[q.hi] = memDone{}
	q.hi++
	q.n--
	if q.n == 0 { // head == tail: reuse the block from its start
		q.hi, q.ti = 0, 0
	}
	return d, true
}

// filter keeps the items for which keep is true, in order.
func (q *memQueue) filter(keep func(memDone) bool) {
	rb, ri := q.head, q.hi
	wb, wi := q.head, q.hi
	kept := 0
	for left := q.n; left > 0; left-- {
		if ri == memBlockLen {
			rb, ri = rb.next, 0
		}
		d := rb.items[ri]
		rb.items[ri] = memDone{}
		ri++
		if keep(d) {
			if wi == memBlockLen {
				wb, wi = wb.next, 0
			}
			wb.items[wi] = d
			wi++
			kept++
		}
	}
	q.n = kept
	if kept == 0 {
		q.clear()
		return
	}
	for b := wb.next; b != nil; {
		next := b.next
		q.release(b)
		b = next
	}
	wb.next = nil
	q.tail, q.ti = wb, wi
}

// clear empties the queue, keeping a few blocks for reuse.
func (q *memQueue) clear() {
	for b := q.head; b != nil; {
		next := b.next
		clear(b.items[:])
		q.release(b)
		b = next
	}
	q.head, q.tail, q.hi, q.ti, q.n = nil, nil, 0, 0, 0
}
