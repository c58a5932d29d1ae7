package consumer_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/otelforge"
)

// BenchmarkObserverHooks measures what the observer hooks cost per delivery
// — Processor.Begin, Process and End, as the transport loops call them,
// around a handler with no middleware — so that the lines of one run give
// the price of each level of observation (read allocs/op):
//
//	none            a Processor without an observer
//	default-logger  the Processor the transports build without WithObserver:
//	                the default logger (at Info) and no other observer
//	otel-noop       plus otelforge's observer on no-op tracer and meter providers
//	otel-sdk        plus otelforge's observer on the SDK (every span sampled,
//	                metrics aggregated in memory, nothing exported)
//
//	go test -run '^$' -bench ObserverHooks -benchmem ./consumer/
func BenchmarkObserverHooks(b *testing.B) {
	body := make([]byte, 256)
	id := uuid.New()
	headers := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	defaults, err := consumer.Apply("bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	otelObserver := func(b *testing.B, opts ...otelforge.Option) consumer.Observer {
		o, err := otelforge.NewConsumerObserver("bench", opts...)
		if err != nil {
			b.Fatal(err)
		}
		return o
	}
	sdk := func(b *testing.B) []otelforge.Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		})
		return []otelforge.Option{otelforge.WithTracerProvider(tp), otelforge.WithMeterProvider(mp)}
	}
	for _, bc := range []struct {
		name string
		proc func(b *testing.B) *consumer.Processor
	}{
		{"none", func(*testing.B) *consumer.Processor { return &consumer.Processor{Handler: benchHandler} }},
		{"default-logger", func(*testing.B) *consumer.Processor { return defaults.Processor(benchHandler) }},
		{"otel-noop", func(b *testing.B) *consumer.Processor {
			s := defaults
			s.Observer = otelObserver(b, otelforge.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelforge.WithMeterProvider(metricnoop.NewMeterProvider()))
			return s.Processor(benchHandler)
		}},
		{"otel-sdk", func(b *testing.B) *consumer.Processor {
			s := defaults
			s.Observer = otelObserver(b, sdk(b)...)
			return s.Processor(benchHandler)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := bc.proc(b)
			ctx := context.Background()
			m := new(consumer.Message)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				*m = consumer.Message{ID: id, CorrelationID: id, Type: "bench", Body: body, Headers: headers,
					System: "kafka", Source: "orders", Partition: 1, Offset: int64(i)}
				work := p.Begin(ctx, m)
				out, err := p.Process(ctx, work, m)
				if out != consumer.OutcomeAck {
					b.Fatal(out, err)
				}
				p.End(work, m, out, err)
			}
		})
	}
}

// Without an observer other than the default logger at Info, a delivery
// through Processor.Begin, Process and End allocates nothing (the handler
// here allocates nothing either).
func TestHooksUnusedDoNotAllocate(t *testing.T) {
	defaults, err := consumer.Apply("test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*consumer.Processor{
		"none":           {Handler: benchHandler},
		"default-logger": defaults.Processor(benchHandler),
	} {
		id := uuid.New()
		m := new(consumer.Message)
		ctx := context.Background()
		allocs := testing.AllocsPerRun(100, func() {
			*m = consumer.Message{ID: id, CorrelationID: id, Type: "test", System: "kafka", Source: "orders"}
			work := p.Begin(ctx, m)
			out, err := p.Process(ctx, work, m)
			p.End(work, m, out, err)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per delivery, want 0", name, allocs)
		}
	}
}
