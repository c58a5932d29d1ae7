package otelforge_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// exported is the SDK's in-memory span exporter and metric reader behind
// one tracer and one meter provider.
type exported struct {
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
	opts   []otelforge.Option
}

func newExported(t *testing.T) *exported {
	spans, reader := tracetest.NewInMemoryExporter(), sdkmetric.NewManualReader()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return &exported{spans: spans, reader: reader,
		opts: []otelforge.Option{otelforge.WithTracerProvider(tp), otelforge.WithMeterProvider(mp)}}
}

// named returns the exported spans called name.
func (e *exported) named(name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range e.spans.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// counter sums the points of the counter (or the counts of the histogram)
// name whose attributes include want.
func (e *exported) counter(t *testing.T, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				n, _ := count(t, m, want...)
				return n
			}
		}
	}
	return 0
}

func stubAttrs(t *testing.T, s tracetest.SpanStub, want ...attribute.KeyValue) {
	t.Helper()
	for _, kv := range want {
		v, ok := attrOf(s.Attributes, kv.Key)
		if !ok || v != kv.Value {
			t.Errorf("span %q: %s = %v (present %v), want %v", s.Name, kv.Key, v.String(), ok, kv.Value.String())
		}
	}
}

// Three services over a real RabbitMQ, each observed by otelforge and
// exporting to the SDK's in-memory exporters: A publishes order.placed
// (rabbitpub) to exchange "orders"; B consumes it from queue "billing"
// (rabbitsub) and, in its handler, publishes payment.captured to exchange
// "payments"; C consumes that from queue "shipping". The four spans are one
// trace, each the child of the one before, with the documented attributes.
// Then A publishes order.placed again (the same ID: a duplicate, which B
// records as such without running its handler) and a message B rejects
// (dead-lettered and counted).
func TestRabbitMQEndToEnd(t *testing.T) {
	url := testenv.AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
		return
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	orders, payments := testenv.Name(t, "orders"), testenv.Name(t, "payments")
	billing, shipping := testenv.Name(t, "billing"), testenv.Name(t, "shipping")
	for _, ex := range []string{orders, payments} {
		if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, qb := range [][3]string{{billing, orders, "order.*"}, {shipping, payments, "payment.*"}} {
		if _, err := ch.QueueDeclare(qb[0], false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(qb[0], qb[2], qb[1], false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{billing, shipping, billing + consumer.DeadLetterSuffix, shipping + consumer.DeadLetterSuffix} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})

	tel := newExported(t)
	pubObs, err := otelforge.NewPublisherObserver(tel.opts...)
	if err != nil {
		t.Fatal(err)
	}
	gen := forge.MustNew("orders.example.com")
	newPublisher := func(exchange string) *rabbitpub.Publisher {
		p, err := rabbitpub.New(url, gen, rabbitpub.WithExchange(exchange), rabbitpub.WithTransient(), publisher.WithObserver(pubObs))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	serviceA, serviceB := newPublisher(orders), newPublisher(payments)

	// B: bills the order and publishes the payment; rejects order SO-BAD.
	var billed atomic.Int64
	obsB, err := otelforge.NewConsumerObserver("billing", tel.opts...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rabbitsub.New(url, billing, consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if string(m.Key) == "SO-BAD" {
			return consumer.Permanent(errors.New("unknown order"))
		}
		billed.Add(1)
		return serviceB.Publish(ctx, publisher.Message{Type: "payment.captured", Key: []any{"SO-1001"}, Body: []byte(`{"paid":1234}`)})
	}), consumer.WithDedupe(newMemory(t), "billing"), consumer.WithObserver(obsB),
		consumer.WithBackoff(5*time.Millisecond, 50*time.Millisecond), consumer.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	// C: ships.
	shipped := make(chan trace.SpanContext, 1)
	obsC, err := otelforge.NewConsumerObserver("shipping", tel.opts...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rabbitsub.New(url, shipping, consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		shipped <- trace.SpanContextFromContext(ctx)
		return nil
	}), consumer.WithDedupe(newMemory(t), "shipping"), consumer.WithObserver(obsC), consumer.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, s := range []*rabbitsub.Consumer{b, c} {
		go func() { done <- s.Run(ctx) }()
	}
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()

	placed := publisher.Message{Type: "order.placed", Key: []any{"SO-1001"}, Body: []byte(`{"total":1234}`)}
	pubCtx := testenv.Context(t, 30*time.Second)
	if err := serviceA.Publish(pubCtx, placed); err != nil {
		t.Fatal(err)
	}
	var inC trace.SpanContext
	select {
	case inC = <-shipped:
	case <-time.After(30 * time.Second):
		t.Fatal("the chain did not reach C")
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				var names []string
				for _, x := range tel.spans.GetSpans() {
					names = append(names, x.Name)
				}
				t.Fatalf("%s; spans: %q", what, names)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	procBName := "process " + orders + ":order.placed:" + billing
	procCName := "process " + payments + ":payment.captured:" + shipping
	waitFor("B's and C's process spans did not end", func() bool {
		return len(tel.named(procBName)) == 1 && len(tel.named(procCName)) == 1
	})

	// One trace: send A → process B → send B → process C.
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		s := tel.named(name)
		if len(s) != 1 {
			var names []string
			for _, x := range tel.spans.GetSpans() {
				names = append(names, x.Name)
			}
			t.Fatalf("%d spans named %q; spans: %q", len(s), name, names)
		}
		return s[0]
	}
	sendA := one("send " + orders + ":order.placed")
	procB := one(procBName)
	sendB := one("send " + payments + ":payment.captured")
	procC := one(procCName)
	if sendA.Parent.IsValid() {
		t.Errorf("send A has parent %v, want a root span", sendA.Parent.SpanID())
	}
	for _, pc := range []struct{ child, parent tracetest.SpanStub }{{procB, sendA}, {sendB, procB}, {procC, sendB}} {
		if pc.child.Parent.SpanID() != pc.parent.SpanContext.SpanID() || pc.child.SpanContext.TraceID() != sendA.SpanContext.TraceID() {
			t.Errorf("%s: parent %v in trace %v; want %s (%v) in trace %v", pc.child.Name, pc.child.Parent.SpanID(),
				pc.child.SpanContext.TraceID(), pc.parent.Name, pc.parent.SpanContext.SpanID(), sendA.SpanContext.TraceID())
		}
	}
	if inC.SpanID() != procC.SpanContext.SpanID() {
		t.Errorf("C's handler ran in span %v, want its process span %v", inC.SpanID(), procC.SpanContext.SpanID())
	}
	for _, pl := range []struct{ proc, send tracetest.SpanStub }{{procB, sendA}, {procC, sendB}} {
		if len(pl.proc.Links) != 1 || pl.proc.Links[0].SpanContext.SpanID() != pl.send.SpanContext.SpanID() {
			t.Errorf("%s: links %v, want one to %s", pl.proc.Name, pl.proc.Links, pl.send.Name)
		}
	}
	if sendA.SpanKind != trace.SpanKindProducer || sendB.SpanKind != trace.SpanKindProducer ||
		procB.SpanKind != trace.SpanKindConsumer || procC.SpanKind != trace.SpanKindConsumer {
		t.Errorf("span kinds %v %v %v %v, want producer, consumer, producer, consumer", sendA.SpanKind, procB.SpanKind, sendB.SpanKind, procC.SpanKind)
	}

	idA, ok := attrOf(sendA.Attributes, semconv.MessagingMessageIDKey)
	if !ok {
		t.Fatal("send A has no message ID")
	}
	idB, _ := attrOf(sendB.Attributes, semconv.MessagingMessageIDKey)
	stubAttrs(t, sendA, semconv.MessagingSystemRabbitMQ, semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(orders+":order.placed"), semconv.MessagingRabbitMQDestinationRoutingKey("order.placed"),
		semconv.MessagingMessageConversationID(idA.AsString()), otelforge.AttrMessageType.String("order.placed"),
		otelforge.AttrMessageKey.String("SO-1001"), otelforge.AttrAttempts.Int(1))
	stubAttrs(t, procB, semconv.MessagingSystemRabbitMQ, semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(orders+":order.placed:"+billing), semconv.MessagingRabbitMQDestinationRoutingKey("order.placed"),
		semconv.MessagingConsumerGroupName("billing"), semconv.MessagingMessageID(idA.AsString()),
		semconv.MessagingMessageConversationID(idA.AsString()), otelforge.AttrMessageType.String("order.placed"),
		otelforge.AttrMessageKey.String("SO-1001"), otelforge.AttrOutcome.String("processed"), otelforge.AttrAttempts.Int(1))
	stubAttrs(t, sendB, semconv.MessagingSystemRabbitMQ, semconv.MessagingDestinationName(payments+":payment.captured"),
		semconv.MessagingRabbitMQDestinationRoutingKey("payment.captured"),
		semconv.MessagingMessageConversationID(idA.AsString()), otelforge.AttrCausationID.String(idA.AsString()))
	stubAttrs(t, procC, semconv.MessagingSystemRabbitMQ, semconv.MessagingDestinationName(payments+":payment.captured:"+shipping),
		semconv.MessagingRabbitMQDestinationRoutingKey("payment.captured"), semconv.MessagingConsumerGroupName("shipping"),
		semconv.MessagingMessageID(idB.AsString()), semconv.MessagingMessageConversationID(idA.AsString()),
		otelforge.AttrCausationID.String(idA.AsString()), otelforge.AttrOutcome.String("processed"))
	if _, ok := attrOf(sendA.Attributes, otelforge.AttrCausationID); ok {
		t.Error("send A, the first message of its chain, has a causation ID")
	}

	// The same order again: the same ID, a duplicate for B.
	if err := serviceA.Publish(pubCtx, placed); err != nil {
		t.Fatal(err)
	}
	// An order B rejects: dead-lettered.
	if err := serviceA.Publish(pubCtx, publisher.Message{Type: "order.placed", Key: []any{"SO-BAD"}, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor("B did not end three deliveries", func() bool { return len(tel.named(procBName)) == 3 })
	group := semconv.MessagingConsumerGroupName("billing")
	var dup, dead tracetest.SpanStub
	for _, s := range tel.named(procBName) {
		switch v, _ := attrOf(s.Attributes, otelforge.AttrOutcome); v.AsString() {
		case "duplicate":
			dup = s
		case "dead-lettered":
			dead = s
		}
	}
	if dup.Name == "" || dead.Name == "" {
		t.Fatalf("B's deliveries: want one duplicate and one dead-lettered besides the processed one")
	}
	stubAttrs(t, dup, semconv.MessagingMessageID(idA.AsString()), otelforge.AttrAttempts.Int(0), group)
	if dup.SpanContext.TraceID() == sendA.SpanContext.TraceID() {
		t.Error("the duplicate's process span is in the first publication's trace, want the second one's")
	}
	stubAttrs(t, dead, semconv.ErrorTypeKey.String("permanent"), otelforge.AttrMessageKey.String("SO-BAD"), group)
	if dead.Status.Code != codes.Error {
		t.Errorf("dead-lettered span status %v, want Error", dead.Status)
	}
	if n := billed.Load(); n != 1 {
		t.Errorf("B's handler billed %d times, want 1", n)
	}
	for _, m := range []struct {
		name string
		want int64
	}{
		{otelforge.MetricDuplicates, 1},
		{otelforge.MetricDeadLetters, 1},
		{"messaging.client.consumed.messages", 3},
	} {
		if n := tel.counter(t, m.name, group, semconv.MessagingSystemRabbitMQ,
			semconv.MessagingDestinationName(orders+":order.placed:"+billing)); n != m.want {
			t.Errorf("%s for billing: %d, want %d", m.name, n, m.want)
		}
	}
	if n := tel.counter(t, "messaging.process.duration", group, otelforge.AttrOutcome.String("dead-lettered"),
		semconv.ErrorTypeKey.String("permanent")); n != 1 {
		t.Errorf("dead-lettered process durations: %d, want 1", n)
	}
	if n := tel.counter(t, "messaging.client.sent.messages", semconv.MessagingDestinationName(orders+":order.placed")); n != 3 {
		t.Errorf("messages A sent: %d, want 3", n)
	}
	// The dead letter is stored, with its reason.
	deadLetters := billing + consumer.DeadLetterSuffix
	waitFor("no dead letter", func() bool {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		st, err := ch.QueueDeclarePassive(deadLetters, false, false, false, false, nil)
		return err == nil && st.Messages == 1
	})
}
