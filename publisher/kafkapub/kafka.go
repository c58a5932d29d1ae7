package kafkapub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/kafkaauth"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/internal/retry"
)

// maxRequestBytes bounds the records of one produce request (an estimate of
// their encoded size), below Kafka's default message.max.bytes of 1 048 588
// bytes per record batch. A record larger than this is sent alone.
const maxRequestBytes = DefaultMaxBodySize

// metadataMaxAge is how long the publisher trusts the partition count it
// looked up (the transport caches the cluster's metadata besides).
const metadataMaxAge = time.Second

// Publisher writes messages to one Kafka topic, stamped with their IDs in
// record headers, with the business key as record key.
//
// Publish and PublishBatch return once the broker acknowledged every record
// (all in-sync replicas by default, [WithAcks]) and retry failed records
// with back-off until the context ends. Records of one partition are sent
// with one produce request in flight at a time; the records of the calls
// that arrive meanwhile, from any number of goroutines, go together in the
// next request (group commit). A lone Publish is sent at once: nothing
// waits for a batch to fill.
//
// kafka-go has no idempotent producer: a retried write whose first attempt
// did reach the broker lands twice. That is safe here because both copies
// carry the same message ID and consumers deduplicate by it. Likewise a
// publish that fails because its context ended while its request was in
// flight may still have been written: publishing is at-least-once. A call
// never returns nil for a record the broker did not acknowledge.
//
// A Publisher is safe for concurrent use.
type Publisher struct {
	newTransport func() (*kafkago.Transport, error) // for Ping; holds the SASL mechanism
	gen          *forge.Generator
	cfg          config
	set          publisher.Settings
	topic        string
	brokers      []string
	transport    *kafkago.Transport
	client       *kafkago.Client
	acks         kafkago.RequiredAcks
	balancer     kafkago.Balancer

	meta atomic.Pointer[topicMeta]

	// base is the context of produce requests: they outlive the callers'
	// contexts (a request carries records of several callers) and end at
	// Close.
	base       context.Context
	cancelBase context.CancelFunc

	mu      sync.Mutex
	closed  bool
	parts   atomic.Pointer[[]*partition] // by partition ID; grows under mu
	active  sync.WaitGroup               // Publish and PublishBatch calls
	senders sync.WaitGroup               // goroutines sending requests
	retries atomic.Int64
}

type topicMeta struct {
	ids     []int
	expires time.Time
}

// New returns a publisher writing to topic on the cluster reachable at
// brokers (host:port bootstrap addresses), deriving IDs with gen. It does no
// I/O: connections are made on first publish; [Publisher.Ping] checks the
// cluster and the topic at once.
func New(brokers []string, topic string, gen *forge.Generator, opts ...publisher.Option) (*Publisher, error) {
	switch {
	case len(brokers) == 0:
		return nil, errors.New("kafkapub: no brokers")
	case topic == "":
		return nil, errors.New("kafkapub: empty topic")
	case gen == nil:
		return nil, errors.New("kafkapub: nil generator")
	}
	cfg := defaultConfig()
	set, err := publisher.Apply("kafkapub", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if set.MaxBodySize == 0 {
		set.MaxBodySize = DefaultMaxBodySize
	}
	t, err := cfg.newTransport(topic)
	if err != nil {
		return nil, err
	}
	// The SASL mechanism (with its password) stays only inside closures and
	// the transport, behind pointers: no formatting of the publisher, even
	// fmt's bad-verb path on a struct holding it, reaches it.
	withSASL := cfg
	newTransport := func() (*kafkago.Transport, error) { return withSASL.newTransport(topic) }
	cfg.sasl = nil
	var bal kafkago.Balancer = &kafkago.Hash{}
	if cfg.partitioner == PartitionMurmur2 {
		bal = kafkago.Murmur2Balancer{}
	}
	base, cancel := context.WithCancel(context.Background())
	return &Publisher{
		newTransport: newTransport,
		gen:          gen,
		cfg:          cfg,
		set:          set,
		topic:        topic,
		brokers:      slices.Clone(brokers),
		transport:    t,
		client:       &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: t, Timeout: cfg.writeTimeout},
		acks:         cfg.acks.required(),
		balancer:     bal,
		base:         base,
		cancelBase:   cancel,
	}, nil
}

// record is one stamped message, queued for a partition.
type record struct {
	key, value []byte
	headers    []kafkago.Header
	time       time.Time
	size       int // estimated encoded size
	id         uuid.UUID
}

// setHeader sets header name to value, replacing a header of that name:
// the headers an observer adds.
func (r *record) setHeader(name, value string) {
	for i := range r.headers {
		if r.headers[i].Key == name {
			r.size += len(value) - len(r.headers[i].Value)
			r.headers[i].Value = []byte(value)
			return
		}
	}
	r.headers = append(r.headers, kafkago.Header{Key: name, Value: []byte(value)})
	r.size += 10 + len(name) + len(value)
}

// String describes p by its topic and brokers; no credential (a SASL
// mechanism's password, a TLS key) ever appears.
func (p *Publisher) String() string {
	if p == nil {
		return "kafkapub.Publisher(nil)"
	}
	return "kafkapub.Publisher(" + p.topic + " on " + strings.Join(p.brokers, ",") + ")"
}

// Format prints [Publisher.String] for every verb (%v, %+v, %#v, %s, ...),
// so that no formatting of a Publisher reaches its configuration.
func (p *Publisher) Format(f fmt.State, verb rune) {
	s := p.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// prepare validates and stamps msg and builds its record. Its errors wrap
// [publisher.ErrInvalid] and do not name this package: the caller does,
// with the message's place in a batch.
func (p *Publisher) prepare(ctx context.Context, msg *publisher.Message, now time.Time) (record, lineage.Lineage, error) {
	if msg.RoutingKey != "" {
		return record{}, lineage.Lineage{}, publisher.Invalid(msg.Type, "a routing key has no meaning on Kafka (the topic is the publisher's, the record key is Key)")
	}
	l, err := publisher.Stamp(ctx, p.gen, msg, p.set.MaxBodySize)
	if err != nil {
		return record{}, lineage.Lineage{}, err
	}
	key, err := publisher.KeyBytes(msg.Key)
	if err != nil {
		return record{}, lineage.Lineage{}, publisher.Invalid(msg.Type, "record key: %v", err)
	}
	n := 3 + len(msg.Headers)
	if l.CausationID != uuid.Nil {
		n++
	}
	// One allocation for the ID header values.
	buf := make([]byte, 3*36+len(msg.Type))
	hexUUID(buf[0:36], l.MessageID)
	hexUUID(buf[36:72], l.CorrelationID)
	copy(buf[108:], msg.Type)
	h := make([]kafkago.Header, 0, n)
	h = append(h,
		kafkago.Header{Key: lineage.HeaderMessageID, Value: buf[0:36:36]},
		kafkago.Header{Key: lineage.HeaderCorrelationID, Value: buf[36:72:72]},
		kafkago.Header{Key: lineage.HeaderMessageType, Value: buf[108:]})
	if l.CausationID != uuid.Nil {
		hexUUID(buf[72:108], l.CausationID)
		h = append(h, kafkago.Header{Key: lineage.HeaderCausationID, Value: buf[72:108:108]})
	}
	size := 32 + len(key) + len(msg.Body)
	for _, x := range h {
		size += 10 + len(x.Key) + len(x.Value)
	}
	for k, v := range msg.Headers {
		h = append(h, kafkago.Header{Key: k, Value: []byte(v)})
		size += 10 + len(k) + len(v)
	}
	return record{key: key, value: msg.Body, headers: h, time: now, size: size, id: l.MessageID}, l, nil
}

func hexUUID(dst []byte, u uuid.UUID) {
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}

func (p *Publisher) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("kafkapub: %w", publisher.ErrClosed)
	}
	p.active.Add(1)
	return nil
}

// Publish stamps msg with its IDs (see [publisher.IDs]) and writes it as one
// record, returning once the broker acknowledged it. Bad input returns an
// error wrapping [publisher.ErrInvalid] and nothing is sent; after Close, one
// wrapping [publisher.ErrClosed]. A write that keeps failing until ctx ends,
// or fails with a Kafka error that is not retriable (e.g. a record over the
// broker's size limit, refused authorisation, refused authentication: a
// wrong SASL password, a broker certificate the client does not trust),
// returns a [*publisher.PublishError] with the number of attempts and the
// last cause.
// When ctx ends Publish returns at once, even while the record's request is
// in flight.
func (p *Publisher) Publish(ctx context.Context, msg publisher.Message) error {
	start := time.Now()
	rec, lin, err := p.prepare(ctx, &msg, start)
	if err != nil {
		return fmt.Errorf("kafkapub: %w", err)
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()
	o := p.observe(ctx, &rec, &lin, 1, start) // nil without an observer
	e := newEntry(&rec)
	defer e.release()
	err = retry.Do(ctx, "kafkapub", rec.id, p.set.NewBackOff, permanent, func() { p.retries.Add(1); o.retry() }, func() error {
		o.attempt()
		if err := p.enqueue(ctx, e); err != nil {
			return o.failed(err)
		}
		return o.failed(e.wait(ctx))
	})
	o.done(err)
	return err
}

// observation is one message's events for the observer.
type observation struct {
	obs  publisher.Observer
	ctx  context.Context // as returned by PublishStart
	pub  *publisher.Publication
	last error // of the last attempt
}

// observe calls PublishStart for rec, with lineage lin, the message of a
// call of batch messages that began at start, and returns nil without an
// observer.
func (p *Publisher) observe(ctx context.Context, rec *record, lin *lineage.Lineage, batch int, start time.Time) *observation {
	if p.set.Observer == nil {
		return nil
	}
	pub := publisher.NewPublication(rec.setHeader)
	pub.System = "kafka"
	pub.Destination = p.topic
	pub.Key = rec.key
	pub.Lineage = *lin
	pub.BodySize = len(rec.value)
	pub.Batch = batch
	pub.Start = start
	o := &observation{obs: p.set.Observer, pub: pub}
	o.ctx = o.obs.PublishStart(ctx, pub)
	return o
}

// attempt counts an attempt; nothing when o is nil.
func (o *observation) attempt() {
	if o != nil {
		o.pub.Attempts++
	}
}

// failed notes err as the last attempt's result and returns it.
func (o *observation) failed(err error) error {
	if o != nil && err != nil {
		o.last = err
	}
	return err
}

// retry reports the failed attempt before the next; nothing when o is nil.
func (o *observation) retry() {
	if o != nil {
		o.obs.PublishRetry(o.ctx, o.pub, o.last)
	}
}

// done reports the final result; nothing when o is nil.
func (o *observation) done(err error) {
	if o != nil {
		o.obs.PublishDone(o.ctx, o.pub, err)
	}
}

// PublishBatch stamps and writes msgs, sending the records of each
// partition together, and returns once every record was acknowledged.
// Records that failed are written again (the others are not) until ctx
// ends. If any message is invalid nothing is sent and the error wraps
// [publisher.ErrInvalid], naming the first invalid message by its index
// ("kafkapub: batch message 2: ..."); otherwise the error, if any, joins one
// [*publisher.PublishError] per record that could not be written.
func (p *Publisher) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	recs := make([]record, len(msgs))
	var lins []lineage.Lineage // for the observer
	if p.set.Observer != nil {
		lins = make([]lineage.Lineage, len(msgs))
	}
	for i := range msgs {
		rec, lin, err := p.prepare(ctx, &msgs[i], now)
		if err != nil {
			return fmt.Errorf("kafkapub: batch message %d: %w", i, err)
		}
		recs[i] = rec
		if lins != nil {
			lins[i] = lin
		}
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()

	todo := make([]*entry, len(recs))
	for i := range recs {
		todo[i] = newEntry(&recs[i])
		if lins != nil {
			todo[i].obs = p.observe(ctx, &recs[i], &lins[i], len(msgs), now)
		}
	}
	var failed []error
	fail := func(e *entry, pe *publisher.PublishError) {
		failed = append(failed, pe)
		e.obs.done(pe)
	}
	var bo backoff.BackOff
	for attempt := 1; ; attempt++ {
		errs := make([]error, len(todo))
		for _, e := range todo {
			e.obs.attempt()
		}
		if err := p.enqueue(ctx, todo...); err != nil {
			for i := range errs {
				errs[i] = err
			}
		} else {
			for i, e := range todo {
				errs[i] = e.wait(ctx)
			}
		}
		var next []*entry
		var lastErr []error
		for i, e := range todo {
			switch err := errs[i]; {
			case err == nil:
				e.obs.done(nil)
				e.release()
			case permanent(err):
				fail(e, &publisher.PublishError{Transport: "kafkapub", MessageID: e.rec.id, Attempts: attempt, Err: err})
			default:
				next = append(next, e)
				lastErr = append(lastErr, err)
			}
		}
		if len(next) == 0 {
			return errors.Join(failed...)
		}
		todo = next
		if bo == nil {
			bo = p.set.NewBackOff()
		}
		p.retries.Add(int64(len(todo)))
		for j, e := range todo {
			e.obs.failed(lastErr[j])
			e.obs.retry()
		}
		if werr := retry.Wait(ctx, bo); werr != nil {
			for j, e := range todo {
				fail(e, &publisher.PublishError{Transport: "kafkapub", MessageID: e.rec.id, Attempts: attempt, Err: retry.JoinCtx("kafkapub", werr, lastErr[j])})
			}
			return errors.Join(failed...)
		}
	}
}

// Entry states.
const (
	queued int32 = iota
	taken
	abandoned
)

// entry is one record waiting for its produce request.
type entry struct {
	rec   *record
	state atomic.Int32
	done  chan error   // receives the request's result
	alone bool         // send in a request of its own (it was too large with others)
	obs   *observation // PublishBatch: the record's observer events; nil without an observer
}

var entryPool = sync.Pool{New: func() any { return &entry{done: make(chan error, 1)} }}

func newEntry(rec *record) *entry {
	e := entryPool.Get().(*entry)
	e.rec = rec
	e.alone = false
	e.obs = nil
	return e
}

// release returns e to the pool unless a sender may still use it.
func (e *entry) release() {
	if e.state.Load() == abandoned {
		return
	}
	e.rec, e.obs = nil, nil
	entryPool.Put(e)
}

// wait returns the result of e's request, or ctx's error when ctx ends
// first. A record still queued is then never sent; one in flight may be
// written, and its sender still reports to done, so e is not reused.
func (e *entry) wait(ctx context.Context) error {
	select {
	case err := <-e.done:
		return err
	case <-ctx.Done():
	}
	for {
		select {
		case err := <-e.done:
			return err
		default:
		}
		if e.state.CompareAndSwap(queued, abandoned) || e.state.CompareAndSwap(taken, abandoned) {
			return ctx.Err()
		}
	}
}

// partition is the send queue of one partition.
type partition struct {
	id    int
	mu    sync.Mutex
	queue []*entry
	busy  bool // a sender is running
}

// enqueue assigns each entry a partition and queues it there, starting the
// partition's sender when none runs. The entries of one call and one
// partition are queued together, in order, so they go in one request.
func (p *Publisher) enqueue(ctx context.Context, es ...*entry) error {
	ids, err := p.partitions(ctx)
	if err != nil {
		return err
	}
	if len(es) == 1 {
		es[0].state.Store(queued)
		p.push(p.partition(p.balancer.Balance(kafkago.Message{Key: es[0].rec.key}, ids...)), es)
		return nil
	}
	groups := map[*partition][]*entry{}
	var order []*partition
	for _, e := range es {
		e.state.Store(queued)
		pt := p.partition(p.balancer.Balance(kafkago.Message{Key: e.rec.key}, ids...))
		if _, ok := groups[pt]; !ok {
			order = append(order, pt)
		}
		groups[pt] = append(groups[pt], e)
	}
	for _, pt := range order {
		p.push(pt, groups[pt])
	}
	return nil
}

func (p *Publisher) push(pt *partition, es []*entry) {
	pt.mu.Lock()
	pt.queue = append(pt.queue, es...)
	start := !pt.busy
	pt.busy = true
	pt.mu.Unlock()
	if start {
		p.senders.Add(1)
		go p.send(pt)
	}
}

// partition returns the send queue of partition id.
func (p *Publisher) partition(id int) *partition {
	if parts := p.parts.Load(); parts != nil && id < len(*parts) {
		return (*parts)[id]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []*partition
	if cur := p.parts.Load(); cur != nil {
		parts = *cur
	}
	if id < len(parts) {
		return parts[id]
	}
	grown := make([]*partition, id+1)
	copy(grown, parts)
	for i := len(parts); i <= id; i++ {
		grown[i] = &partition{id: i}
	}
	p.parts.Store(&grown)
	return grown[id]
}

// partitions returns the topic's partition IDs, from a recent lookup or
// from the transport's metadata cache (which asks the cluster on a miss).
func (p *Publisher) partitions(ctx context.Context) ([]int, error) {
	if m := p.meta.Load(); m != nil && time.Now().Before(m.expires) {
		return m.ids, nil
	}
	r, err := p.transport.RoundTrip(ctx, p.client.Addr, &metadataAPI.Request{
		TopicNames:             []string{p.topic},
		AllowAutoTopicCreation: p.cfg.autoCreate,
	})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", p.topic, err)
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name != p.topic {
			continue
		}
		if t.ErrorCode != 0 {
			return nil, fmt.Errorf("metadata of topic %s: %w", p.topic, kafkago.Error(t.ErrorCode))
		}
		ids := make([]int, len(t.Partitions))
		for i := range ids {
			ids[i] = i
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("metadata of topic %s: no partitions", p.topic)
		}
		p.meta.Store(&topicMeta{ids: ids, expires: time.Now().Add(metadataMaxAge)})
		return ids, nil
	}
	return nil, fmt.Errorf("metadata of topic %s: %w", p.topic, kafkago.UnknownTopicOrPartition)
}

// send sends the queued records of pt, one request at a time, until the
// queue is empty.
func (p *Publisher) send(pt *partition) {
	defer p.senders.Done()
	var batch []*entry
	recs := &recordSet{}
	for {
		batch = batch[:0]
		size := 0
		pt.mu.Lock()
		n := 0
		for _, e := range pt.queue {
			if len(batch) > 0 && (len(batch) >= p.cfg.batchSize || size+e.rec.size > maxRequestBytes || e.alone) {
				break
			}
			n++
			if !e.state.CompareAndSwap(queued, taken) {
				continue // abandoned by its caller: never sent
			}
			batch = append(batch, e)
			size += e.rec.size
			if e.alone {
				break
			}
		}
		rest := copy(pt.queue, pt.queue[n:])
		clear(pt.queue[rest:])
		pt.queue = pt.queue[:rest]
		if len(batch) == 0 && rest == 0 {
			pt.busy = false
			pt.mu.Unlock()
			return
		}
		pt.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		recs.reset(batch)
		err := p.produce(pt.id, recs)
		if len(batch) > 1 && errors.Is(err, kafkago.MessageSizeTooLarge) {
			// Too large together: each goes alone, at once (unless its
			// caller gave up meanwhile).
			var again []*entry
			for _, e := range batch {
				e.alone = true
				if e.state.CompareAndSwap(taken, queued) {
					again = append(again, e)
				}
			}
			pt.mu.Lock()
			pt.queue = append(again, pt.queue...)
			pt.mu.Unlock()
			continue
		}
		if err != nil && p.isStale(err) {
			p.meta.Store(nil)
		}
		for _, e := range batch {
			e.done <- err
		}
	}
}

// isStale reports errors after which the partition count must be looked up
// again.
func (p *Publisher) isStale(err error) bool {
	return errors.Is(err, kafkago.UnknownTopicOrPartition) || errors.Is(err, kafkago.NotLeaderForPartition) ||
		errors.Is(err, kafkago.LeaderNotAvailable)
}

func (p *Publisher) produce(part int, recs *recordSet) error {
	ctx, cancel := context.WithTimeout(p.base, p.cfg.writeTimeout)
	defer cancel()
	resp, err := p.client.Produce(ctx, &kafkago.ProduceRequest{
		Topic: p.topic, Partition: part, RequiredAcks: p.acks, Records: recs,
	})
	switch {
	case err != nil:
		return err
	case resp == nil: // acks=none
		return nil
	case resp.Error != nil:
		if len(resp.RecordErrors) > 0 {
			var msgs []string
			for i, e := range resp.RecordErrors {
				msgs = append(msgs, fmt.Sprintf("record %d of the request: %v", i, e))
			}
			return fmt.Errorf("%w (%s)", resp.Error, strings.Join(msgs, "; "))
		}
		return resp.Error
	}
	return nil
}

// recordSet is a kafkago.RecordReader over a batch of entries.
type recordSet struct {
	batch      []*entry
	i          int
	rec        kafkago.Record
	key, value bytesReader
}

func (r *recordSet) reset(batch []*entry) { r.batch, r.i = batch, 0 }

// ReadRecord implements kafkago.RecordReader.
func (r *recordSet) ReadRecord() (*kafkago.Record, error) {
	if r.i >= len(r.batch) {
		return nil, io.EOF
	}
	rec := r.batch[r.i].rec
	r.i++
	r.rec = kafkago.Record{Time: rec.time, Headers: rec.headers}
	if rec.key != nil {
		r.key.Reset(rec.key)
		r.rec.Key = &r.key
	}
	if rec.value != nil {
		r.value.Reset(rec.value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

// permanent reports errors that writing again cannot fix: among them
// refused authentication (a wrong SASL password, an untrusted broker
// certificate).
func permanent(err error) bool {
	var ke kafkago.Error
	switch {
	case errors.Is(err, publisher.ErrClosed), errors.Is(err, io.ErrClosedPipe), kafkaauth.Refused(err):
		return true
	case errors.As(err, &ke):
		return !ke.Temporary()
	}
	return false
}

// Ping checks that the cluster answers and that the topic exists (creating
// it with [WithAutoTopicCreation]), on a connection of its own, so that a
// service can fail fast at start-up. It returns an error naming the
// brokers when none answers before ctx ends (or, when ctx has no deadline,
// within [DefaultWriteTimeout]), one wrapping [ErrUnknownTopic] when the
// topic is missing, and one wrapping [publisher.ErrClosed] after Close.
func (p *Publisher) Ping(ctx context.Context) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.active.Done()
	t, err := p.newTransport()
	if err != nil {
		return err
	}
	defer t.CloseIdleConnections()
	return ping(ctx, t, p.brokers, p.topic, p.cfg.autoCreate)
}

// ErrUnknownTopic is returned by [Publisher.Ping] for a topic the cluster
// does not have.
var ErrUnknownTopic = errors.New("kafkapub: unknown topic")

func ping(ctx context.Context, t *kafkago.Transport, brokers []string, topic string, autoCreate bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWriteTimeout)
		defer cancel()
	}
	r, err := t.RoundTrip(ctx, kafkago.TCP(brokers...), &metadataAPI.Request{
		TopicNames: []string{topic}, AllowAutoTopicCreation: autoCreate,
	})
	if err != nil {
		return fmt.Errorf("kafkapub: ping %s: %w", strings.Join(brokers, ","), err)
	}
	for _, tm := range r.(*metadataAPI.Response).Topics {
		if tm.Name != topic {
			continue
		}
		switch code := kafkago.Error(tm.ErrorCode); {
		case code == kafkago.UnknownTopicOrPartition && !autoCreate:
			return fmt.Errorf("%w %q on %s (create it, or enable WithAutoTopicCreation)", ErrUnknownTopic, topic, strings.Join(brokers, ","))
		case code != 0:
			return fmt.Errorf("kafkapub: ping %s: topic %q: %w", strings.Join(brokers, ","), topic, code)
		}
		return nil
	}
	return fmt.Errorf("%w %q on %s", ErrUnknownTopic, topic, strings.Join(brokers, ","))
}

// Close stops accepting new publishes, waits for those in progress to
// return (each is bounded by its own context), cancels the requests still
// in flight for callers that gave up, and closes the connections.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.active.Wait()
	p.cancelBase()
	p.senders.Wait()
	p.transport.CloseIdleConnections()
	return nil
}
