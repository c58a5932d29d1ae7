package otelforge

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/publisher"
)

var _ publisher.Observer = (*PublisherObserver)(nil)

// PublisherObserver is a [publisher.Observer] that traces every published
// message with a PRODUCER span, injects its context into the message's
// headers and records the messaging metrics (see the package
// documentation). Create it with [NewPublisherObserver] and pass it to a
// publisher with publisher.WithObserver. It is safe for concurrent use.
type PublisherObserver struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	attrs    []attribute.KeyValue
	duration metric.Float64Histogram
	sent     metric.Int64Counter
	retries  metric.Int64Counter
	routes   cache[pubRouteKey, pubRoute]
}

type pubRouteKey struct{ system, destination, routingKey string }

// pubRoute is what does not change between messages to one destination,
// computed once: names, span options, metric options.
type pubRoute struct {
	system attribute.KeyValue
	dest   string
	name   string
	start  []trace.SpanStartOption
	okAdd  []metric.AddOption    // sent messages, confirmed
	okRec  []metric.RecordOption // operation duration, confirmed
	retry  []metric.AddOption
}

// NewPublisherObserver returns a PublisherObserver configured by opts
// ([WithTracerProvider], [WithMeterProvider], [WithPropagator],
// [WithAttributes]). It returns an error for an invalid option or when an
// instrument cannot be created.
func NewPublisherObserver(opts ...Option) (*PublisherObserver, error) {
	c, err := newConfig(kindPublisher, opts)
	if err != nil {
		return nil, err
	}
	m := c.meter()
	o := &PublisherObserver{tracer: c.tracer(), prop: c.prop, attrs: c.attrs}
	dur, err := messagingconv.NewClientOperationDuration(m, metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, fmt.Errorf("otelforge: NewPublisherObserver: %w", err)
	}
	sent, err := messagingconv.NewClientSentMessages(m)
	if err != nil {
		return nil, fmt.Errorf("otelforge: NewPublisherObserver: %w", err)
	}
	o.duration, o.sent = dur.Inst(), sent.Inst()
	if o.retries, err = m.Int64Counter(MetricPublishRetries, metric.WithUnit("{attempt}"),
		metric.WithDescription("Number of times a message was published again after a failed attempt.")); err != nil {
		return nil, fmt.Errorf("otelforge: NewPublisherObserver: %w", err)
	}
	return o, nil
}

func (o *PublisherObserver) route(p *publisher.Publication) *pubRoute {
	return o.routes.get(pubRouteKey{p.System, p.Destination, p.RoutingKey}, func(k pubRouteKey) *pubRoute {
		dest := sendDestination(k.system, k.destination, k.routingKey)
		r := &pubRoute{system: semconv.MessagingSystemKey.String(k.system), dest: dest, name: spanName(OperationSend, dest)}
		ok := attribute.NewSet(r.metricAttrs(o.attrs, "")...)
		r.okAdd = []metric.AddOption{metric.WithAttributeSet(ok)}
		r.okRec = []metric.RecordOption{metric.WithAttributeSet(ok)}
		r.retry = []metric.AddOption{metric.WithAttributeSet(set(o.attrs, r.system, semconv.MessagingDestinationName(dest)))}
		attrs := r.metricAttrs(nil, "")
		if k.routingKey != "" {
			attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(k.routingKey))
		}
		r.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...)}
		return r
	})
}

// metricAttrs are the attributes of the semantic-convention metrics, with
// extra and error.type when errType is not empty.
func (r *pubRoute) metricAttrs(extra []attribute.KeyValue, errType string) []attribute.KeyValue {
	kvs := make([]attribute.KeyValue, 0, 6+len(extra))
	kvs = append(kvs, r.system, semconv.MessagingOperationName(OperationSend), semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(r.dest))
	if errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(errType))
	}
	return append(kvs, extra...)
}

// publishSpanKey holds the span of one message in the context PublishStart
// returns; keyed by observer, so that two observers never end each other's
// spans.
type publishSpanKey struct{ o *PublisherObserver }

// PublishStart starts the message's "send" span as a child of the span in
// ctx (the handler's "process" span when publishing from a handler), and
// injects its context into the message's headers.
func (o *PublisherObserver) PublishStart(ctx context.Context, p *publisher.Publication) context.Context {
	r := o.route(p)
	ctx, span := o.tracer.Start(ctx, r.name, r.start...)
	if span.IsRecording() {
		kvs := make([]attribute.KeyValue, 0, 6)
		kvs = append(kvs, semconv.MessagingMessageBodySize(p.BodySize))
		kvs = appendLineage(kvs, p.Lineage.MessageID, p.Lineage.CorrelationID, p.Lineage.CausationID, p.Lineage.Type)
		span.SetAttributes(appendKey(kvs, p.System, p.Key)...)
	}
	o.prop.Inject(ctx, publicationCarrier{p})
	return context.WithValue(ctx, publishSpanKey{o}, span)
}

// PublishRetry adds a "retry" event to the message's span and counts the
// retry.
func (o *PublisherObserver) PublishRetry(ctx context.Context, p *publisher.Publication, err error) {
	if span, ok := ctx.Value(publishSpanKey{o}).(trace.Span); ok && span.IsRecording() {
		span.AddEvent("retry", trace.WithAttributes(
			AttrAttempt.Int(p.Attempts),
			semconv.ErrorTypeKey.String(ErrorType(err)),
			semconv.ExceptionMessage(errString(err))))
	}
	o.retries.Add(ctx, 1, o.route(p).retry...)
}

// PublishDone ends the message's span, with error.type and an error status
// when err is not nil, and records its duration and count.
func (o *PublisherObserver) PublishDone(ctx context.Context, p *publisher.Publication, err error) {
	r := o.route(p)
	errType := ErrorType(err)
	if span, ok := ctx.Value(publishSpanKey{o}).(trace.Span); ok {
		if span.IsRecording() {
			span.SetAttributes(AttrAttempts.Int(p.Attempts))
			if err != nil {
				span.SetAttributes(semconv.ErrorTypeKey.String(errType))
				span.SetStatus(codes.Error, err.Error())
			}
		}
		span.End()
	}
	if err == nil {
		if !p.Start.IsZero() {
			o.duration.Record(ctx, time.Since(p.Start).Seconds(), r.okRec...)
		}
		o.sent.Add(ctx, 1, r.okAdd...)
		return
	}
	opt := metric.WithAttributeSet(attribute.NewSet(r.metricAttrs(o.attrs, errType)...))
	if !p.Start.IsZero() {
		o.duration.Record(ctx, time.Since(p.Start).Seconds(), opt)
	}
	o.sent.Add(ctx, 1, opt)
}

// publicationCarrier writes injected headers with Publication.SetHeader.
type publicationCarrier struct{ p *publisher.Publication }

func (c publicationCarrier) Get(string) string     { return "" }
func (c publicationCarrier) Set(key, value string) { c.p.SetHeader(key, value) }
func (c publicationCarrier) Keys() []string        { return nil }

// appendLineage appends the message's IDs and type.
func appendLineage(kvs []attribute.KeyValue, id, correlation, causation uuid.UUID, typ string) []attribute.KeyValue {
	if id != uuid.Nil {
		kvs = append(kvs, semconv.MessagingMessageID(id.String()))
	}
	if correlation != uuid.Nil {
		kvs = append(kvs, semconv.MessagingMessageConversationID(correlation.String()))
	}
	if causation != uuid.Nil {
		kvs = append(kvs, AttrCausationID.String(causation.String()))
	}
	if typ != "" {
		kvs = append(kvs, AttrMessageType.String(typ))
	}
	return kvs
}

// appendKey appends the business key, when it has a string form: the Kafka
// record key, or our own attribute on RabbitMQ.
func appendKey(kvs []attribute.KeyValue, system string, key []byte) []attribute.KeyValue {
	if key == nil || !utf8.Valid(key) {
		return kvs
	}
	if system == systemKafka {
		return append(kvs, semconv.MessagingKafkaMessageKey(string(key)))
	}
	return append(kvs, AttrMessageKey.String(string(key)))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// durationBuckets are the histogram bucket boundaries, in seconds, that the
// semantic conventions advise for messaging durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
