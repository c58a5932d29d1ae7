package otelforge

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every tracer and meter this
// package creates.
const ScopeName = "github.com/uuidforge/uuidforge/otelforge"

// Option configures [NewPublisherObserver], [NewConsumerObserver] and
// [ObserveOutbox]. The constructor applies the options in order and returns
// the first error, naming the option.
type Option func(*config) error

type kind int

const (
	kindPublisher kind = iota + 1
	kindConsumer
	kindOutbox
)

func (k kind) constructor() string {
	switch k {
	case kindPublisher:
		return "NewPublisherObserver"
	case kindConsumer:
		return "NewConsumerObserver"
	}
	return "ObserveOutbox"
}

type config struct {
	kind   kind
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	linked bool
	attrs  []attribute.KeyValue
}

func newConfig(k kind, opts []Option) (*config, error) {
	c := &config{kind: k}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(c); err != nil {
			return nil, fmt.Errorf("otelforge: %s: %w", k.constructor(), err)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = defaultPropagator()
	}
	return c, nil
}

// defaultPropagator is the global propagator, unless it propagates nothing
// (no field: the application never set one), in which case W3C Trace
// Context: an observer whose headers carried no trace context would defeat
// its purpose.
func defaultPropagator() propagation.TextMapPropagator {
	p := otel.GetTextMapPropagator()
	if len(p.Fields()) == 0 {
		return propagation.TraceContext{}
	}
	return p
}

func (c *config) tracer() trace.Tracer {
	return c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
}

func (c *config) meter() metric.Meter {
	return c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
}

// WithTracerProvider creates spans with tp. Default: the global tracer
// provider (otel.GetTracerProvider), which forwards to the provider the
// application sets with otel.SetTracerProvider, even later.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) error {
		if tp == nil {
			return errors.New("WithTracerProvider(nil)")
		}
		c.tp = tp
		return nil
	}
}

// WithMeterProvider records metrics with mp. Default: the global meter
// provider (otel.GetMeterProvider), which forwards to the provider the
// application sets with otel.SetMeterProvider, even later.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) error {
		if mp == nil {
			return errors.New("WithMeterProvider(nil)")
		}
		c.mp = mp
		return nil
	}
}

// WithPropagator injects the trace context into published messages' headers
// and extracts it from consumed ones with p. Default: the global propagator
// (otel.GetTextMapPropagator) as it is when the observer is created, or W3C
// Trace Context (propagation.TraceContext) if it propagates nothing, as it
// does until the application sets one. Set the global propagator before
// creating observers, or pass this option. Not an option of [ObserveOutbox].
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) error {
		if p == nil {
			return errors.New("WithPropagator(nil)")
		}
		if c.kind == kindOutbox {
			return errors.New("WithPropagator is not an option of ObserveOutbox")
		}
		c.prop = p
		return nil
	}
}

// WithLinkedTraces makes each "process" span only link to the producer's
// span (the message's creation context) instead of also being its child:
// every delivery then starts a trace of its own, or joins the span already
// in the context the transport gives consumer.Processor.Begin. Use it when
// one trace per message chain would grow too large (a replay of a whole
// topic, a long saga). Default: the process span is the child of the
// producer's span when the delivery's context has no span of its own (see
// the package documentation). Only an option of [NewConsumerObserver].
func WithLinkedTraces() Option {
	return func(c *config) error {
		if c.kind != kindConsumer {
			return fmt.Errorf("WithLinkedTraces is not an option of %s", c.kind.constructor())
		}
		c.linked = true
		return nil
	}
}

// WithAttributes adds attrs to every metric point the observer or gauge
// records (not to spans), for example the name of the outbox whose backlog
// [ObserveOutbox] reports. Default: none. Given several times, the
// attributes accumulate; a key given twice keeps its last value.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) error {
		for _, a := range attrs {
			if !a.Valid() {
				return fmt.Errorf("WithAttributes: invalid attribute %q", a.Key)
			}
		}
		c.attrs = append(c.attrs, attrs...)
		return nil
	}
}
