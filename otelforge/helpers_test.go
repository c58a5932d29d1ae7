package otelforge_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/publishertest"
)

// telemetry is an in-memory tracer and meter provider.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t testing.TB) *telemetry {
	sr := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	tel := &telemetry{
		spans:  sr,
		reader: reader,
		tp:     sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)),
		mp:     sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	}
	t.Cleanup(func() {
		_ = tel.tp.Shutdown(context.Background())
		_ = tel.mp.Shutdown(context.Background())
	})
	return tel
}

func (tel *telemetry) opts(more ...otelforge.Option) []otelforge.Option {
	return append([]otelforge.Option{otelforge.WithTracerProvider(tel.tp), otelforge.WithMeterProvider(tel.mp)}, more...)
}

func (tel *telemetry) publisherObserver(t testing.TB, more ...otelforge.Option) *otelforge.PublisherObserver {
	o, err := otelforge.NewPublisherObserver(tel.opts(more...)...)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (tel *telemetry) consumerObserver(t testing.TB, group string, more ...otelforge.Option) *otelforge.ConsumerObserver {
	o, err := otelforge.NewConsumerObserver(group, tel.opts(more...)...)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// ended returns the ended spans named name.
func (tel *telemetry) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tel.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (tel *telemetry) one(t testing.TB, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	s := tel.ended(name)
	if len(s) != 1 {
		var names []string
		for _, s := range tel.spans.Ended() {
			names = append(names, s.Name())
		}
		t.Fatalf("%d spans named %q; ended spans: %q", len(s), name, names)
	}
	return s[0]
}

// metrics collects every metric, by name.
func (tel *telemetry) metrics(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// matches reports whether set has every attribute of want.
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// count returns the sum of the counter's points (or the count of the
// histogram's) whose attributes include want, and how many points matched.
func count(t testing.TB, m metricdata.Metrics, want ...attribute.KeyValue) (total int64, points int) {
	t.Helper()
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
				points++
			}
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += int64(p.Count)
				points++
			}
		}
	case nil:
	default:
		t.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
	}
	return total, points
}

func attrOf(kvs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// wantAttrs fails unless the span has every attribute of want.
func wantAttrs(t testing.TB, s sdktrace.ReadOnlySpan, want ...attribute.KeyValue) {
	t.Helper()
	for _, kv := range want {
		v, ok := attrOf(s.Attributes(), kv.Key)
		if !ok || v != kv.Value {
			t.Errorf("span %q: %s = %v (present %v), want %v", s.Name(), kv.Key, v.String(), ok, kv.Value.String())
		}
	}
}

// noAttrs fails if the span has any of keys.
func noAttrs(t testing.TB, s sdktrace.ReadOnlySpan, keys ...attribute.Key) {
	t.Helper()
	for _, k := range keys {
		if v, ok := attrOf(s.Attributes(), k); ok {
			t.Errorf("span %q: unexpected %s = %v", s.Name(), k, v.String())
		}
	}
}

// broker stands in for a transport: it publishes through a
// publishertest.Recorder, calling the publisher hooks as the transports do,
// and turns each message into the consumer.Message a transport loop would
// deliver, with the headers the hooks set.
type broker struct {
	t        testing.TB
	gen      *forge.Generator
	rec      *publishertest.Recorder
	obs      publisher.Observer
	system   string
	exchange string // RabbitMQ exchange, or the Kafka topic
	queue    string // RabbitMQ queue the messages reach

	mu     sync.Mutex
	offset int64
	out    []*consumer.Message
}

var _ publisher.Publisher = (*broker)(nil)

func newBroker(t testing.TB, obs publisher.Observer, system, exchange, queue string) *broker {
	gen := forge.MustNew("orders.example.com")
	return &broker{t: t, gen: gen, rec: publishertest.New(gen), obs: obs, system: system, exchange: exchange, queue: queue}
}

func (b *broker) Publish(ctx context.Context, msg publisher.Message) error {
	return b.PublishBatch(ctx, msg)
}

func (b *broker) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	start := time.Now()
	for _, msg := range msgs {
		l, err := publisher.IDs(ctx, b.gen, &msg)
		if err != nil {
			return err
		}
		key, err := publisher.KeyBytes(msg.Key)
		if err != nil {
			return err
		}
		headers := map[string]string{}
		for k, v := range msg.Headers {
			headers[k] = v
		}
		p := publisher.NewPublication(func(name, value string) { headers[name] = value })
		p.System, p.Destination, p.Key, p.Lineage = b.system, b.exchange, key, l
		p.BodySize, p.Batch, p.Start = len(msg.Body), len(msgs), start
		if b.system == "rabbitmq" {
			p.RoutingKey = msg.Type
		}
		pctx := ctx
		if b.obs != nil {
			pctx = b.obs.PublishStart(ctx, p)
		}
		p.Attempts = 1
		err = b.rec.Publish(ctx, msg)
		if b.obs != nil {
			b.obs.PublishDone(pctx, p, err)
		}
		if err != nil {
			return err
		}
		m := &consumer.Message{ID: l.MessageID, CorrelationID: l.CorrelationID, CausationID: l.CausationID,
			Type: l.Type, Key: key, Body: msg.Body, Headers: headers, System: b.system, Source: b.queue}
		b.mu.Lock()
		if b.system == "rabbitmq" {
			m.Exchange, m.RoutingKey = b.exchange, msg.Type
		} else {
			m.Source, m.Partition, m.Offset = b.exchange, 2, b.offset
			b.offset++
		}
		b.out = append(b.out, m)
		b.mu.Unlock()
	}
	return nil
}

// take returns the messages published so far and forgets them.
func (b *broker) take() []*consumer.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.out
	b.out = nil
	return out
}

// processor runs h under the standard chain with dedupe on store (memory
// when nil), reporting to obs, with short waits.
func processor(t testing.TB, h consumer.HandlerFunc, obs consumer.Observer, store dedupe.Store, scope string, opts ...consumer.Option) *consumer.Processor {
	t.Helper()
	if store == nil {
		mem := newMemory(t)
		store = mem
	}
	chain, err := consumer.NewHandler(h, append([]consumer.Option{consumer.WithDedupe(store, scope)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &consumer.Processor{Handler: chain, MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Observer: obs}
}

// deliver runs one delivery of a copy of m through p as a transport loop
// does, from ctx.
func deliver(ctx context.Context, p *consumer.Processor, m *consumer.Message) (consumer.Outcome, error) {
	d := *m
	work := p.Begin(ctx, &d)
	out, err := p.Process(ctx, work, &d)
	p.End(work, &d, out, err)
	return out, err
}

func spanID(s sdktrace.ReadOnlySpan) trace.SpanID   { return s.SpanContext().SpanID() }
func traceID(s sdktrace.ReadOnlySpan) trace.TraceID { return s.SpanContext().TraceID() }

// newMemory returns a memory store closed when the test ends.
func newMemory(t testing.TB) *dedupe.Memory {
	t.Helper()
	m, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}
