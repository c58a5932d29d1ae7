package otelforge_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// The consumption loops hand the trace context that a producer put in the
// AMQP headers table or the Kafka record headers to the observer: over the
// real brokers, the process span is the child of the producer's send span
// and the handler runs within it. The messages are written with the raw
// drivers and headers set by PublisherObserver.PublishStart, as a publisher
// calling the hooks would.

// sendSpan starts a send span for one message and returns the headers it
// injected.
func sendSpan(t *testing.T, obs *telemetry, system, dest, routingKey string, id uuid.UUID) (map[string]string, func()) {
	t.Helper()
	pub := obs.publisherObserver(t)
	headers := map[string]string{}
	p := publisher.NewPublication(func(k, v string) { headers[k] = v })
	p.System, p.Destination, p.RoutingKey, p.Start = system, dest, routingKey, time.Now()
	p.Lineage = lineage.Lineage{MessageID: id, CorrelationID: id, Type: "order.placed"}
	ctx := pub.PublishStart(context.Background(), p)
	return headers, func() { pub.PublishDone(ctx, p, nil) }
}

// runUntilHandled runs a consumption loop until the handler has seen one
// message and returns the span context the handler ran with.
func runUntilHandled(t *testing.T, run func(ctx context.Context, h consumer.Handler) error) trace.SpanContext {
	t.Helper()
	got := make(chan trace.SpanContext, 1)
	h := consumer.HandlerFunc(func(ctx context.Context, _ *consumer.Message) error {
		select {
		case got <- trace.SpanContextFromContext(ctx):
		default:
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, h) }()
	var sc trace.SpanContext
	select {
	case sc = <-got:
	case <-time.After(30 * time.Second):
		t.Error("no message handled within 30 s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return")
	}
	return sc
}

func checkProcessSpan(t *testing.T, tel *telemetry, sendName, processName string, inHandler trace.SpanContext) {
	t.Helper()
	send, proc := tel.one(t, sendName), tel.one(t, processName)
	if proc.Parent().SpanID() != spanID(send) || traceID(proc) != traceID(send) {
		t.Errorf("process span parent %v in trace %v, want the send span %v in trace %v",
			proc.Parent().SpanID(), traceID(proc), spanID(send), traceID(send))
	}
	if inHandler.SpanID() != spanID(proc) {
		t.Errorf("the handler ran in span %v, want the process span %v", inHandler.SpanID(), spanID(proc))
	}
	wantAttrs(t, proc, semconv.MessagingConsumerGroupName("billing"))
}

func TestRabbitMQDeliveryJoinsTheProducerTrace(t *testing.T) {
	url := testenv.AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := testenv.Name(t, "otelforge")
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)

	tel := newTelemetry(t)
	id := uuid.New()
	headers, done := sendSpan(t, tel, "rabbitmq", "", queue, id)
	table := amqp.Table{}
	for k, v := range headers {
		table[k] = v
	}
	ctx := testenv.Context(t, 10*time.Second)
	if err := ch.PublishWithContext(ctx, "", queue, true, false, amqp.Publishing{MessageId: id.String(), Type: "order.placed",
		Headers: table, Body: []byte(`{"total":1234}`)}); err != nil {
		t.Fatal(err)
	}
	done()

	sub := tel.consumerObserver(t, "billing")
	mem := newMemory(t)
	inHandler := runUntilHandled(t, func(ctx context.Context, h consumer.Handler) error {
		c, err := rabbitsub.New(url, queue, h, consumer.WithDedupe(mem, "billing"), consumer.WithObserver(sub))
		if err != nil {
			return err
		}
		return c.Run(ctx)
	})
	// Default exchange, routing key = queue: the destination is the queue.
	checkProcessSpan(t, tel, "send "+queue, "process "+queue, inHandler)
}

func TestKafkaDeliveryJoinsTheProducerTrace(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "otelforge")
	tel := newTelemetry(t)
	id := uuid.New()
	headers, done := sendSpan(t, tel, "kafka", topic, "", id)
	rec := kafkago.Message{Key: []byte("SO-1001"), Value: []byte(`{"total":1234}`), Headers: []kafkago.Header{
		{Key: lineage.HeaderMessageID, Value: []byte(id.String())},
		{Key: lineage.HeaderMessageType, Value: []byte("order.placed")},
	}}
	for k, v := range headers {
		rec.Headers = append(rec.Headers, kafkago.Header{Key: k, Value: []byte(v)})
	}
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx := testenv.Context(t, 30*time.Second)
	var err error
	for range 50 { // topic creation is asynchronous
		if err = w.WriteMessages(ctx, rec); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	done()

	sub := tel.consumerObserver(t, "billing")
	mem := newMemory(t)
	inHandler := runUntilHandled(t, func(ctx context.Context, h consumer.Handler) error {
		c, err := kafkasub.New(brokers, topic, "billing", h, consumer.WithDedupe(mem, "billing"), consumer.WithObserver(sub),
			consumer.WithShutdownTimeout(10*time.Second))
		if err != nil {
			return err
		}
		return c.Run(ctx)
	})
	checkProcessSpan(t, tel, "send "+topic, "process "+topic, inHandler)
	wantAttrs(t, tel.one(t, "process "+topic), semconv.MessagingDestinationPartitionID("0"), semconv.MessagingKafkaOffset(0),
		semconv.MessagingKafkaMessageKey("SO-1001"), semconv.MessagingMessageID(id.String()))
}
