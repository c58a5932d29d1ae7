package otelforge_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// seen is what a handler saw of one delivery.
type seen struct {
	m    consumer.Message
	span trace.SpanContext
}

// runConsumer runs c until the test ends.
func runConsumer(t *testing.T, c *kafkasub.Consumer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
}

// TestKafkaEndToEnd runs three services over the in-process Kafka broker
// with the real publisher and consumer and the OpenTelemetry observers:
// service A publishes an order, B consumes it and publishes an invoice
// from its handler, C consumes the invoice. The chain is one trace, each
// span with the attributes the package documents; A also publishes the
// order again (same message ID), which B records as a duplicate, and a
// poison order, which B dead-letters and counts.
func TestKafkaEndToEnd(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	orders, invoices := testenv.Name(t, "orders"), testenv.Name(t, "invoices")
	billing, shipping := testenv.Name(t, "billing"), testenv.Name(t, "shipping")
	tel := newTelemetry(t)
	ctx := testenv.Context(t, time.Minute)

	newPublisher := func(topic string, gen *forge.Generator) *kafkapub.Publisher {
		p, err := kafkapub.New(brokers, topic, gen, publisher.WithObserver(tel.publisherObserver(t)), kafkapub.WithAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := p.Ping(ctx); err != nil { // creates the topic
			t.Fatal(err)
		}
		return p
	}
	a := newPublisher(orders, forge.MustNew("orders.example.com"))
	b := newPublisher(invoices, forge.MustNew("billing.example.com"))

	var mu sync.Mutex
	var inB, inC []seen
	handlerB := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		inB = append(inB, seen{*m, trace.SpanContextFromContext(ctx)})
		mu.Unlock()
		if m.Type == "order.poison" {
			return consumer.Permanent(errors.New("total is negative"))
		}
		return b.Publish(ctx, publisher.Message{Type: "invoice.created", Key: []any{string(m.Key)}, Body: []byte(`{"invoice":1}`)})
	})
	handlerC := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		inC = append(inC, seen{*m, trace.SpanContextFromContext(ctx)})
		mu.Unlock()
		return nil
	})
	opts := func(group string) []consumer.Option {
		return []consumer.Option{consumer.WithDedupe(newMemory(t), group), consumer.WithObserver(tel.consumerObserver(t, group)),
			consumer.WithShutdownTimeout(10 * time.Second), consumer.WithBackoff(time.Millisecond, 10*time.Millisecond)}
	}

	// A publishes before the consumers start, so that B gets the order and
	// its second copy together, in one batch of their partition.
	order := publisher.Message{Type: "order.placed", Key: []any{"SO-1001"}, Body: []byte(`{"total":1234}`)}
	for _, m := range []publisher.Message{order, order, {Type: "order.poison", Key: []any{"SO-1002"}, Body: []byte(`{"total":-1}`)}} {
		if err := a.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	cB, err := kafkasub.New(brokers, orders, billing, handlerB, opts(billing)...)
	if err != nil {
		t.Fatal(err)
	}
	cC, err := kafkasub.New(brokers, invoices, shipping, handlerC, opts(shipping)...)
	if err != nil {
		t.Fatal(err)
	}
	runConsumer(t, cB)
	runConsumer(t, cC)
	deadline := time.Now().Add(30 * time.Second)
	for len(tel.ended("process "+orders)) < 3 || len(tel.ended("process "+invoices)) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d deliveries ended in B, %d in C; want 3 and 1",
				len(tel.ended("process "+orders)), len(tel.ended("process "+invoices)))
		}
		time.Sleep(20 * time.Millisecond)
	}

	idA := forge.MustNew("orders.example.com").MustID("order.placed", "SO-1001")
	byOutcome := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range tel.ended("process " + orders) {
		v, _ := attrOf(s.Attributes(), otelforge.AttrOutcome)
		byOutcome[v.AsString()] = s
	}
	procB, dup, dead := byOutcome["processed"], byOutcome["duplicate"], byOutcome["dead-lettered"]
	if procB == nil || dup == nil || dead == nil {
		t.Fatalf("B's deliveries ended %v, want processed, duplicate and dead-lettered", byOutcome)
	}
	sends := tel.ended("send " + orders)
	if len(sends) != 3 {
		t.Fatalf("%d send spans for A, want 3", len(sends))
	}
	var sendA sdktrace.ReadOnlySpan // the span of the record B processed
	for _, s := range sends {
		if s.SpanContext().SpanID() == procB.Parent().SpanID() {
			sendA = s
		}
	}
	if sendA == nil {
		t.Fatalf("B's process span has parent %v, none of A's send spans", procB.Parent())
	}
	sendB, procC := tel.one(t, "send "+invoices), tel.one(t, "process "+invoices)

	// One trace: A's send → B's process → B's send → C's process.
	if sendA.Parent().IsValid() {
		t.Errorf("A's send span has parent %v, want a root span", sendA.Parent())
	}
	for _, pc := range []struct{ child, parent sdktrace.ReadOnlySpan }{{procB, sendA}, {sendB, procB}, {procC, sendB}} {
		if pc.child.Parent().SpanID() != spanID(pc.parent) || traceID(pc.child) != traceID(sendA) {
			t.Errorf("%s: parent %v in trace %v; want %s (%v) in trace %v", pc.child.Name(),
				pc.child.Parent().SpanID(), traceID(pc.child), pc.parent.Name(), spanID(pc.parent), traceID(sendA))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var gotB *seen
	for i := range inB {
		if inB[i].m.ID == idA {
			gotB = &inB[i]
		}
	}
	if gotB == nil || len(inC) != 1 {
		t.Fatalf("B handled %d deliveries (the order: %v), C %d; want the order once in B and one invoice in C", len(inB), gotB != nil, len(inC))
	}
	if gotB.span.SpanID() != spanID(procB) || inC[0].span.SpanID() != spanID(procC) {
		t.Errorf("handlers ran in spans %v and %v, want B's and C's process spans", gotB.span.SpanID(), inC[0].span.SpanID())
	}
	idB := inC[0].m.ID

	// The documented attributes.
	kafka := semconv.MessagingSystemKey.String("kafka")
	wantAttrs(t, sendA, kafka, semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(orders), semconv.MessagingKafkaMessageKey("SO-1001"),
		semconv.MessagingMessageID(idA.String()), semconv.MessagingMessageConversationID(idA.String()),
		otelforge.AttrMessageType.String("order.placed"), semconv.MessagingMessageBodySize(len(order.Body)),
		otelforge.AttrAttempts.Int(1))
	noAttrs(t, sendA, otelforge.AttrCausationID, semconv.ErrorTypeKey)
	wantAttrs(t, procB, kafka, semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(orders), semconv.MessagingConsumerGroupName(billing),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(gotB.m.Partition)), semconv.MessagingKafkaOffset(int(gotB.m.Offset)),
		semconv.MessagingKafkaMessageKey("SO-1001"), semconv.MessagingMessageBodySize(len(order.Body)),
		semconv.MessagingMessageID(idA.String()), semconv.MessagingMessageConversationID(idA.String()),
		otelforge.AttrMessageType.String("order.placed"), otelforge.AttrAttempts.Int(1))
	noAttrs(t, procB, otelforge.AttrCausationID, semconv.ErrorTypeKey)
	wantAttrs(t, sendB, kafka, semconv.MessagingDestinationName(invoices), semconv.MessagingKafkaMessageKey("SO-1001"),
		semconv.MessagingMessageID(idB.String()), semconv.MessagingMessageConversationID(idA.String()),
		otelforge.AttrCausationID.String(idA.String()), otelforge.AttrMessageType.String("invoice.created"),
		otelforge.AttrAttempts.Int(1))
	wantAttrs(t, procC, kafka, semconv.MessagingDestinationName(invoices), semconv.MessagingConsumerGroupName(shipping),
		semconv.MessagingMessageID(idB.String()), semconv.MessagingMessageConversationID(idA.String()),
		otelforge.AttrCausationID.String(idA.String()), otelforge.AttrOutcome.String("processed"))
	if inC[0].m.CausationID != idA || inC[0].m.CorrelationID != idA {
		t.Errorf("C got causation %v, correlation %v; want A's message ID %v", inC[0].m.CausationID, inC[0].m.CorrelationID, idA)
	}
	for _, s := range []sdktrace.ReadOnlySpan{sendA, sendB} {
		if s.SpanKind() != trace.SpanKindProducer {
			t.Errorf("%s: kind %v, want producer", s.Name(), s.SpanKind())
		}
	}
	for _, s := range []sdktrace.ReadOnlySpan{procB, procC, dup, dead} {
		if s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("%s: kind %v, want consumer", s.Name(), s.SpanKind())
		}
	}

	// The second copy: a duplicate, without a handler run.
	wantAttrs(t, dup, semconv.MessagingMessageID(idA.String()), otelforge.AttrOutcome.String("duplicate"), otelforge.AttrAttempts.Int(0))
	if dup.Status().Code == codes.Error {
		t.Errorf("duplicate: status %v", dup.Status())
	}
	// The poison order: dead-lettered, with the reason, and in the
	// dead-letter topic.
	wantAttrs(t, dead, otelforge.AttrOutcome.String("dead-lettered"), semconv.ErrorTypeKey.String("permanent"))
	if dead.Status().Code != codes.Error {
		t.Errorf("dead letter: status %v, want an error", dead.Status())
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: orders + consumer.DeadLetterSuffix,
		GroupID: testenv.Name(t, "dl"), StartOffset: kafkago.FirstOffset, MaxWait: 50 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, JoinGroupBackoff: 100 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if dl, err := r.ReadMessage(rctx); err != nil || string(dl.Key) != "SO-1002" {
		t.Errorf("dead letter %q: %v", dl.Key, err)
	}

	// Metrics.
	ms := tel.metrics(t)
	group := func(g string) attribute.KeyValue { return semconv.MessagingConsumerGroupName(g) }
	for _, c := range []struct {
		metric string
		want   int64
		attrs  []attribute.KeyValue
	}{
		{"messaging.client.sent.messages", 3, []attribute.KeyValue{semconv.MessagingDestinationName(orders)}},
		{"messaging.client.sent.messages", 1, []attribute.KeyValue{semconv.MessagingDestinationName(invoices)}},
		{"messaging.client.consumed.messages", 3, []attribute.KeyValue{group(billing)}},
		{"messaging.client.consumed.messages", 1, []attribute.KeyValue{group(shipping)}},
		{otelforge.MetricDuplicates, 1, []attribute.KeyValue{group(billing), semconv.MessagingDestinationName(orders)}},
		{otelforge.MetricDeadLetters, 1, []attribute.KeyValue{group(billing), semconv.MessagingDestinationName(orders)}},
		{otelforge.MetricDeadLetters, 0, []attribute.KeyValue{group(shipping)}},
		{"messaging.process.duration", 1, []attribute.KeyValue{group(billing), otelforge.AttrOutcome.String("dead-lettered")}},
	} {
		if n, _ := count(t, ms[c.metric], c.attrs...); n != c.want {
			t.Errorf("%s %v: %d, want %d", c.metric, c.attrs, n, c.want)
		}
	}
}
