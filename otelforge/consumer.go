package otelforge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/messagingconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
)

// Names of the metrics of our own namespace. The package documentation
// lists every instrument with its unit and attributes.
const (
	MetricPublishRetries = "uuidforge.publisher.retries"
	MetricRetries        = "uuidforge.consumer.retries"
	MetricDuplicates     = "uuidforge.consumer.duplicates"
	MetricLeaseWaits     = "uuidforge.consumer.lease_waits"
	MetricStoreErrors    = "uuidforge.consumer.store_errors"
	MetricLeasesLost     = "uuidforge.consumer.leases_lost"
	MetricDeadLetters    = "uuidforge.consumer.dead_letters"
	MetricOutboxBacklog  = "uuidforge.outbox.backlog"
	MetricOutboxOldest   = "uuidforge.outbox.oldest_age"
)

var _ consumer.Observer = (*ConsumerObserver)(nil)

// ConsumerObserver is a [consumer.Observer] that traces every delivery with
// a CONSUMER "process" span, current in the context the handler runs with,
// and records the messaging metrics and the dedupe outcomes (see the
// package documentation). Create it with [NewConsumerObserver] and pass it
// to a consumer with consumer.WithObserver. It is safe for concurrent use.
type ConsumerObserver struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	linked bool
	group  attribute.KeyValue
	attrs  []attribute.KeyValue

	consumed    metric.Int64Counter
	duration    metric.Float64Histogram
	retries     metric.Int64Counter
	duplicates  metric.Int64Counter
	leaseWaits  metric.Int64Counter
	storeErrors metric.Int64Counter
	leasesLost  metric.Int64Counter
	deadLetters metric.Int64Counter

	routes cache[conRouteKey, conRoute]
}

type conRouteKey struct {
	system, exchange, source, routingKey string
	partition                            int
}

// conRoute is what does not change between deliveries from one source,
// computed once: names, span options, metric options.
type conRoute struct {
	dest      string
	spanName  string
	partition string // "" on RabbitMQ
	start     []trace.SpanStartOption
	op        []metric.AddOption    // consumed messages
	processed []metric.RecordOption // process duration of a processed delivery
	duplicate []metric.RecordOption // process duration of a duplicate
	ours      []metric.AddOption    // our counters
	opAttrs   []attribute.KeyValue  // attributes of the semantic-convention metrics
}

// NewConsumerObserver returns a ConsumerObserver for the consumer group
// group — the messaging.consumer.group.name of its spans and metrics: the
// Kafka group ID, the RabbitMQ queue, or the dedupe scope — configured by
// opts ([WithTracerProvider], [WithMeterProvider], [WithPropagator],
// [WithLinkedTraces], [WithAttributes]). It returns an error for an empty
// group, an invalid option, or when an instrument cannot be created.
func NewConsumerObserver(group string, opts ...Option) (*ConsumerObserver, error) {
	if group == "" {
		return nil, errors.New("otelforge: NewConsumerObserver: empty group (name the Kafka group, the RabbitMQ queue or the dedupe scope)")
	}
	c, err := newConfig(kindConsumer, opts)
	if err != nil {
		return nil, err
	}
	o := &ConsumerObserver{tracer: c.tracer(), prop: c.prop, linked: c.linked,
		group: semconv.MessagingConsumerGroupName(group), attrs: c.attrs}
	m := c.meter()
	wrap := func(err error) error { return fmt.Errorf("otelforge: NewConsumerObserver: %w", err) }
	consumed, err := messagingconv.NewClientConsumedMessages(m)
	if err != nil {
		return nil, wrap(err)
	}
	dur, err := messagingconv.NewProcessDuration(m, metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, wrap(err)
	}
	o.consumed, o.duration = consumed.Inst(), dur.Inst()
	for _, c := range []struct {
		dst               *metric.Int64Counter
		name, unit, descr string
	}{
		{&o.retries, MetricRetries, "{attempt}", "Number of handler runs that failed and are retried."},
		{&o.duplicates, MetricDuplicates, "{message}", "Number of deliveries skipped as duplicates of a message already processed."},
		{&o.leaseWaits, MetricLeaseWaits, "{wait}", "Number of times a delivery waited for the lease of another consumer processing the same message."},
		{&o.storeErrors, MetricStoreErrors, "{error}", "Number of times a delivery waited because the dedupe store failed (lost leases not included)."},
		{&o.leasesLost, MetricLeasesLost, "{lease}", "Number of handler runs that succeeded but could not be completed because the claim's lease had been taken over."},
		{&o.deadLetters, MetricDeadLetters, "{message}", "Number of deliveries dead-lettered."},
	} {
		if *c.dst, err = m.Int64Counter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.descr)); err != nil {
			return nil, wrap(err)
		}
	}
	return o, nil
}

func (o *ConsumerObserver) route(m *consumer.Message) *conRoute {
	return o.routes.get(conRouteKey{m.System, m.Exchange, m.Source, m.RoutingKey, m.Partition}, func(k conRouteKey) *conRoute {
		dest := processDestination(k.system, k.exchange, k.source, k.routingKey)
		r := &conRoute{dest: dest, spanName: spanName(OperationProcess, dest)}
		sys := semconv.MessagingSystemKey.String(k.system)
		r.opAttrs = []attribute.KeyValue{
			sys,
			semconv.MessagingOperationName(OperationProcess),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(dest),
			o.group,
		}
		if k.system == systemKafka {
			r.partition = strconv.Itoa(k.partition)
			r.opAttrs = append(r.opAttrs, semconv.MessagingDestinationPartitionID(r.partition))
		}
		startAttrs := slices.Clip(r.opAttrs)
		if k.routingKey != "" {
			startAttrs = append(startAttrs, semconv.MessagingRabbitMQDestinationRoutingKey(k.routingKey))
		}
		r.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(startAttrs...)}
		r.op = []metric.AddOption{metric.WithAttributeSet(set(o.attrs, r.opAttrs...))}
		r.processed = []metric.RecordOption{metric.WithAttributeSet(o.outcomeSet(r, consumer.Processed, ""))}
		r.duplicate = []metric.RecordOption{metric.WithAttributeSet(o.outcomeSet(r, consumer.Duplicate, ""))}
		r.ours = []metric.AddOption{metric.WithAttributeSet(set(o.attrs, sys, semconv.MessagingDestinationName(dest), o.group))}
		return r
	})
}

// outcomeSet is the attribute set of the process duration of a delivery
// that ended with res (and errType, when not empty).
func (o *ConsumerObserver) outcomeSet(r *conRoute, res consumer.Result, errType string) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, len(r.opAttrs)+2)
	kvs = append(append(kvs, r.opAttrs...), AttrOutcome.String(res.String()))
	if errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(errType))
	}
	return set(o.attrs, kvs...)
}

// processSpanKey holds our span in the context DeliveryStart returns, keyed
// by observer so that two observers never end each other's spans.
type processSpanKey struct{ o *ConsumerObserver }

// DeliveryStart extracts the producer's context from the message headers,
// starts the delivery's "process" span and returns the context the handler
// runs with, in which that span is current. Its parent is the producer's
// span, unless the context already has a span or [WithLinkedTraces] was
// given: then it keeps that span as parent (or starts a trace) and only
// links to the producer's. It counts the delivery as consumed.
func (o *ConsumerObserver) DeliveryStart(ctx context.Context, m *consumer.Message) context.Context {
	r := o.route(m)
	parent := ctx
	var creation trace.SpanContext
	if len(m.Headers) > 0 {
		ambient := trace.SpanFromContext(ctx)
		ex := o.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
		if sc := trace.SpanContextFromContext(ex); sc.IsValid() && !sc.Equal(ambient.SpanContext()) {
			creation = sc
		}
		parent = ex
		if creation.IsValid() && (o.linked || ambient.SpanContext().IsValid()) {
			parent = trace.ContextWithSpan(ex, ambient) // keep baggage, not the producer as parent
		}
	}
	ctx, span := o.tracer.Start(parent, r.spanName, r.start...)
	if span.IsRecording() {
		kvs := make([]attribute.KeyValue, 0, 8)
		kvs = appendLineage(kvs, m.ID, m.CorrelationID, m.CausationID, m.Type) // when the transport has read them
		kvs = append(kvs, semconv.MessagingMessageBodySize(len(m.Body)))
		if r.partition != "" {
			kvs = append(kvs, semconv.MessagingKafkaOffset(int(m.Offset)))
		}
		if m.Redelivered {
			kvs = append(kvs, AttrRedelivered.Bool(true))
		}
		span.SetAttributes(appendKey(kvs, m.System, m.Key)...)
		if creation.IsValid() {
			span.AddLink(trace.Link{SpanContext: creation})
		}
	}
	o.consumed.Add(ctx, 1, r.op...)
	return context.WithValue(ctx, processSpanKey{o}, span)
}

// AttemptDone adds an event to the delivery's span — "retry", "wait for
// lease" or "wait for store" — and counts it.
func (o *ConsumerObserver) AttemptDone(ctx context.Context, m *consumer.Message, a consumer.Attempt) {
	r := o.route(m)
	if span, ok := ctx.Value(processSpanKey{o}).(trace.Span); ok && span.IsRecording() {
		kvs := []attribute.KeyValue{
			AttrAttempt.Int(m.Attempt),
			AttrWait.Float64(a.Wait.Seconds()),
			semconv.ErrorTypeKey.String(ErrorType(a.Err)),
			semconv.ExceptionMessage(errString(a.Err)),
		}
		if a.LeaseLost {
			kvs = append(kvs, AttrLeaseLost.Bool(true))
		}
		span.AddEvent(a.Next.String(), trace.WithAttributes(kvs...))
	}
	switch {
	case a.Next == consumer.NextRetry:
		o.retries.Add(ctx, 1, r.ours...)
	case a.Next == consumer.NextWaitLease:
		o.leaseWaits.Add(ctx, 1, r.ours...)
	case a.LeaseLost:
		o.leasesLost.Add(ctx, 1, r.ours...)
	case a.Next == consumer.NextWaitStore:
		o.storeErrors.Add(ctx, 1, r.ours...)
	}
}

// DeliveryDone sets the message's IDs (again: a transport may read them
// only after DeliveryStart) and the outcome on the delivery's span, ends it, and records
// the processing duration and the outcome's counter. A dead-lettered or
// abandoned delivery gets error.type and an error status.
func (o *ConsumerObserver) DeliveryDone(ctx context.Context, m *consumer.Message, d consumer.Delivery) {
	r := o.route(m)
	failed := d.Result != consumer.Processed && d.Result != consumer.Duplicate
	errType := ""
	if failed {
		if errType = ErrorType(d.Err); errType == "" {
			errType = semconv.ErrorTypeOther.Value.AsString()
		}
	}
	if span, ok := ctx.Value(processSpanKey{o}).(trace.Span); ok {
		if span.IsRecording() {
			kvs := make([]attribute.KeyValue, 0, 8)
			kvs = appendLineage(kvs, m.ID, m.CorrelationID, m.CausationID, m.Type)
			kvs = append(kvs, AttrOutcome.String(d.Result.String()), AttrAttempts.Int(d.Attempts))
			if m.ContentID {
				kvs = append(kvs, AttrContentID.Bool(true))
			}
			if failed {
				kvs = append(kvs, semconv.ErrorTypeKey.String(errType))
				msg := d.Result.String()
				if d.Err != nil {
					msg += ": " + d.Err.Error()
				}
				span.SetStatus(codes.Error, msg)
			}
			span.SetAttributes(kvs...)
		}
		span.End()
	}
	switch d.Result {
	case consumer.Processed:
		o.duration.Record(ctx, d.Duration.Seconds(), r.processed...)
	case consumer.Duplicate:
		o.duration.Record(ctx, d.Duration.Seconds(), r.duplicate...)
		o.duplicates.Add(ctx, 1, r.ours...)
	default:
		if d.Result == consumer.DeadLettered {
			o.deadLetters.Add(ctx, 1, r.ours...)
		}
		o.duration.Record(ctx, d.Duration.Seconds(), metric.WithAttributeSet(o.outcomeSet(r, d.Result, errType)))
	}
}
