package publishertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

var _ publisher.Publisher = (*Recorder)(nil)

// Recorded is one message a [Recorder] accepted.
type Recorded struct {
	// Message is the message as given (its Headers map is copied).
	Message publisher.Message
	// Lineage holds the IDs the message was stamped with.
	Lineage lineage.Lineage
	// Key is the wire form of the business key ([publisher.KeyBytes]).
	Key []byte
}

// Recorder is a [publisher.Publisher] that validates and stamps messages
// like the real publishers and keeps them in memory. The zero value is not
// usable; create one with [New]. A Recorder is safe for concurrent use.
type Recorder struct {
	gen     *forge.Generator
	maxBody int

	mu   sync.Mutex
	msgs []Recorded
	fail func(publisher.Message) error
}

// New returns a Recorder that derives IDs with gen. A body limit can be set
// with [Recorder.SetMaxBodySize]; by default there is none.
func New(gen *forge.Generator) *Recorder {
	if gen == nil {
		panic("publishertest: New(nil generator)")
	}
	return &Recorder{gen: gen}
}

// SetMaxBodySize makes the recorder reject bodies longer than n bytes, as a
// transport with that limit would (n <= 0: no limit).
func (r *Recorder) SetMaxBodySize(n int) {
	r.mu.Lock()
	r.maxBody = n
	r.mu.Unlock()
}

// FailWith makes every later Publish and PublishBatch call fail for each
// message for which f returns an error (f == nil: none fails). A failing
// message is not recorded; in a batch, the others are.
func (r *Recorder) FailWith(f func(publisher.Message) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

// Publish stamps and records msg; see [publisher.Publisher].
func (r *Recorder) Publish(ctx context.Context, msg publisher.Message) error {
	return r.publish(ctx, false, msg)
}

// PublishBatch stamps every message first: if any is invalid, nothing is
// recorded and the error wraps [publisher.ErrInvalid]. Then it records each
// message that [Recorder.FailWith] lets through and returns the joined
// errors of the others.
func (r *Recorder) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	return r.publish(ctx, true, msgs...)
}

// publish is Publish and PublishBatch; an invalid message's error names its
// place in a batch.
func (r *Recorder) publish(ctx context.Context, batch bool, msgs ...publisher.Message) error {
	invalid := func(i int, err error) error {
		if batch {
			return fmt.Errorf("publishertest: batch message %d: %w", i, err)
		}
		return fmt.Errorf("publishertest: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publishertest: %w", err)
	}
	r.mu.Lock()
	maxBody, fail := r.maxBody, r.fail
	r.mu.Unlock()
	recs := make([]Recorded, len(msgs))
	for i := range msgs {
		m := msgs[i]
		l, err := publisher.Stamp(ctx, r.gen, &m, maxBody)
		if err != nil {
			return invalid(i, err)
		}
		key, err := publisher.KeyBytes(m.Key)
		if err != nil {
			return invalid(i, publisher.Invalid(m.Type, "key: %v", err))
		}
		if m.Headers != nil {
			hs := make(map[string]string, len(m.Headers))
			for k, v := range m.Headers {
				hs[k] = v
			}
			m.Headers = hs
		}
		m.Key = slices.Clone(m.Key)
		m.Body = slices.Clone(m.Body)
		recs[i] = Recorded{Message: m, Lineage: l, Key: key}
	}
	var errs []error
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		if fail != nil {
			if err := fail(rec.Message); err != nil {
				errs = append(errs, &publisher.PublishError{Transport: "publishertest", MessageID: rec.Lineage.MessageID, Attempts: 1, Err: err})
				continue
			}
		}
		r.msgs = append(r.msgs, rec)
	}
	return errors.Join(errs...)
}

// Messages returns a copy of the messages recorded so far, in order.
func (r *Recorder) Messages() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// Len returns the number of messages recorded so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// Reset forgets the recorded messages.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.msgs = nil
	r.mu.Unlock()
}
