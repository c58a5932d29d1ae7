package otelforge_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// A service that publishes and consumes: set the global providers and the
// propagator once, then give each side its observer. (Compile-only: it
// needs a broker.)
func Example() {
	tp := sdktrace.NewTracerProvider( /* sdktrace.WithBatcher(exporter), ... */ )
	defer tp.Shutdown(context.Background())
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	pubObs, err := otelforge.NewPublisherObserver()
	if err != nil {
		log.Fatal(err)
	}
	pub, err := rabbitpub.New("amqp://guest:guest@localhost:5672/", forge.MustNew("orders.example.com"),
		rabbitpub.WithExchange("orders"), publisher.WithObserver(pubObs))
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()

	subObs, err := otelforge.NewConsumerObserver("billing")
	if err != nil {
		log.Fatal(err)
	}
	handler := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		// ctx carries the "process" span: this message's send span is its child.
		return pub.Publish(ctx, publisher.Message{Type: "payment.captured", Key: []any{string(m.Key)}})
	})
	store, err := dedupe.NewMemory()
	if err != nil {
		log.Fatal(err)
	}
	sub, err := rabbitsub.New("amqp://guest:guest@localhost:5672/", "billing", handler,
		consumer.WithDedupe(store, "billing"), consumer.WithObserver(subObs))
	if err != nil {
		log.Fatal(err)
	}
	_ = sub.Run(context.Background())
}

// Serving the metrics to Prometheus: a meter provider whose reader is the
// OpenTelemetry Prometheus exporter, and its registry served on /metrics.
// Here the handler is called directly and a few lines of its answer shown.
func Example_prometheus() {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())

	obs, err := otelforge.NewPublisherObserver(otelforge.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	_, err = otelforge.ObserveOutbox(func(context.Context) (int64, time.Duration, error) { return 3, 2 * time.Second, nil },
		otelforge.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}

	// What a transport does for each message it publishes.
	p := publisher.NewPublication(func(name, value string) {})
	p.System, p.Destination, p.Start = "kafka", "orders", time.Now()
	obs.PublishDone(obs.PublishStart(context.Background(), p), p, nil)

	// In a service: http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	rr := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	sc := bufio.NewScanner(rr.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "messaging_client_sent_messages_total") || strings.HasPrefix(line, "uuidforge_outbox") {
			fmt.Println(line)
		}
	}
	// Output:
	// messaging_client_sent_messages_total{messaging_destination_name="orders",messaging_operation_name="send",messaging_operation_type="send",messaging_system="kafka"} 1
	// uuidforge_outbox_backlog 3
	// uuidforge_outbox_oldest_age_seconds 2
}
