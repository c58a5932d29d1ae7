package publisher_test

import (
	"context"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
)

// BenchmarkObserverHooks measures the core's share of publishing one
// message as a transport does it: Stamp, then — only when the settings
// have an observer — a Publication, PublishStart and PublishDone. The
// broker I/O is the transports' business and is left out. Read allocs/op:
//
//	none       no observer: the transports skip the hooks (Settings.Observer is nil)
//	otel-noop  otelforge's observer on no-op tracer and meter providers
//	otel-sdk   otelforge's observer on the SDK (every span sampled, metrics
//	           aggregated in memory, nothing exported)
//
//	go test -run '^$' -bench ObserverHooks -benchmem ./publisher/
func BenchmarkObserverHooks(b *testing.B) {
	msg := publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234,"currency":"EUR"}`)}
	observer := func(b *testing.B, opts ...otelforge.Option) publisher.Option {
		o, err := otelforge.NewPublisherObserver(opts...)
		if err != nil {
			b.Fatal(err)
		}
		return publisher.WithObserver(o)
	}
	for _, bc := range []struct {
		name string
		opts func(b *testing.B) []publisher.Option
	}{
		{"none", func(*testing.B) []publisher.Option { return nil }},
		{"otel-noop", func(b *testing.B) []publisher.Option {
			return []publisher.Option{observer(b, otelforge.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelforge.WithMeterProvider(metricnoop.NewMeterProvider()))}
		}},
		{"otel-sdk", func(b *testing.B) []publisher.Option {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() {
				_ = tp.Shutdown(context.Background())
				_ = mp.Shutdown(context.Background())
			})
			return []publisher.Option{observer(b, otelforge.WithTracerProvider(tp), otelforge.WithMeterProvider(mp))}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := publisher.Apply("bench", nil, bc.opts(b))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			headers := map[string]string{} // stands for the AMQP table or the record headers
			set := func(name, value string) { headers[name] = value }
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				l, err := publisher.Stamp(ctx, benchGen, &msg, 0)
				if err != nil {
					b.Fatal(err)
				}
				if obs := s.Observer; obs != nil {
					p := publisher.NewPublication(set)
					p.System, p.Destination, p.Lineage, p.BodySize, p.Batch, p.Start = "kafka", "orders", l, len(msg.Body), 1, start
					pctx := obs.PublishStart(ctx, p)
					p.Attempts = 1
					obs.PublishDone(pctx, p, nil)
				}
			}
		})
	}
}
