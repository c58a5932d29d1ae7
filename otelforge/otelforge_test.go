package otelforge_test

import (
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/publisher"
)

var placed = publisher.Message{Type: "order.placed", Key: []any{"SO-1001"}, Body: []byte(`{"total":1234}`)}

// One chain of messages is one trace: service 1 publishes A, billing handles
// A and publishes B, shipping handles B and publishes C, audit handles C.
// Each process span is the child of the send span whose context its message
// carried; each send span from a handler is the child of its process span.
func TestChainIsOneTrace(t *testing.T) {
	for _, system := range []string{"rabbitmq", "kafka"} {
		t.Run(system, func(t *testing.T) {
			tel := newTelemetry(t)
			pubObs := tel.publisherObserver(t)
			ab := newBroker(t, pubObs, system, "orders", "billing")
			bc := newBroker(t, pubObs, system, "payments", "shipping")
			cd := newBroker(t, pubObs, system, "shipments", "audit")
			ctx := context.Background()

			billing := processor(t, func(ctx context.Context, m *consumer.Message) error {
				return bc.Publish(ctx, publisher.Message{Type: "payment.captured", Key: []any{"SO-1001"}, Body: []byte("{}")})
			}, tel.consumerObserver(t, "billing"), nil, "billing")
			shipping := processor(t, func(ctx context.Context, m *consumer.Message) error {
				return cd.Publish(ctx, publisher.Message{Type: "shipment.created", Key: []any{"SO-1001"}, Body: []byte("{}")})
			}, tel.consumerObserver(t, "shipping"), nil, "shipping")
			audit := processor(t, func(context.Context, *consumer.Message) error { return nil },
				tel.consumerObserver(t, "audit"), nil, "audit")

			if err := ab.Publish(ctx, placed); err != nil {
				t.Fatal(err)
			}
			msgs := ab.take()
			if len(msgs) != 1 || msgs[0].Headers["traceparent"] == "" {
				t.Fatalf("published %d messages: want one with a traceparent header", len(msgs))
			}
			for _, step := range []struct {
				p    *consumer.Processor
				next *broker
			}{{billing, bc}, {shipping, cd}, {audit, nil}} {
				if out, err := deliver(ctx, step.p, msgs[0]); out != consumer.OutcomeAck {
					t.Fatalf("delivery: %v %v", out, err)
				}
				if step.next != nil {
					if msgs = step.next.take(); len(msgs) != 1 {
						t.Fatalf("the handler published %d messages, want 1", len(msgs))
					}
				}
			}

			dest := func(op, exchange, rk, queue string) string {
				if system == "kafka" {
					return op + " " + exchange
				}
				if op == "send" {
					return op + " " + exchange + ":" + rk
				}
				return op + " " + exchange + ":" + rk + ":" + queue
			}
			sendA := tel.one(t, dest("send", "orders", "order.placed", ""))
			procA := tel.one(t, dest("process", "orders", "order.placed", "billing"))
			sendB := tel.one(t, dest("send", "payments", "payment.captured", ""))
			procB := tel.one(t, dest("process", "payments", "payment.captured", "shipping"))
			sendC := tel.one(t, dest("send", "shipments", "shipment.created", ""))
			procC := tel.one(t, dest("process", "shipments", "shipment.created", "audit"))

			if sendA.Parent().IsValid() {
				t.Errorf("send A has parent %v, want a root span", sendA.Parent())
			}
			for _, pc := range []struct {
				child, parent sdktrace.ReadOnlySpan
			}{{procA, sendA}, {sendB, procA}, {procB, sendB}, {sendC, procB}, {procC, sendC}} {
				if pc.child.Parent().SpanID() != spanID(pc.parent) || traceID(pc.child) != traceID(sendA) {
					t.Errorf("%s: parent %v in trace %v; want %s (%v) in trace %v", pc.child.Name(),
						pc.child.Parent().SpanID(), traceID(pc.child), pc.parent.Name(), spanID(pc.parent), traceID(sendA))
				}
			}
			for _, pl := range []struct {
				proc, send sdktrace.ReadOnlySpan
			}{{procA, sendA}, {procB, sendB}, {procC, sendC}} {
				if links := pl.proc.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != spanID(pl.send) {
					t.Errorf("%s links %v, want one link to %s", pl.proc.Name(), links, pl.send.Name())
				}
				if pl.proc.SpanKind() != trace.SpanKindConsumer || pl.send.SpanKind() != trace.SpanKindProducer {
					t.Errorf("kinds %v / %v, want consumer / producer", pl.proc.SpanKind(), pl.send.SpanKind())
				}
			}
			// The lineage travels alongside: B's causation ID is A's message ID,
			// and the whole chain shares A's correlation ID.
			idA, _ := attrOf(sendA.Attributes(), semconv.MessagingMessageIDKey)
			wantAttrs(t, sendB, otelforge.AttrCausationID.String(idA.AsString()),
				semconv.MessagingMessageConversationID(idA.AsString()))
			wantAttrs(t, procC, semconv.MessagingMessageConversationID(idA.AsString()))
		})
	}
}

func TestPublishSpan(t *testing.T) {
	for _, tc := range []struct {
		name, system, exchange, routingKey string
		wantName                           string
		want                               []attribute.KeyValue
		absent                             []attribute.Key
	}{
		{"rabbitmq exchange and key", "rabbitmq", "orders", "order.placed", "send orders:order.placed",
			[]attribute.KeyValue{semconv.MessagingSystemRabbitMQ, semconv.MessagingDestinationName("orders:order.placed"),
				semconv.MessagingRabbitMQDestinationRoutingKey("order.placed"), otelforge.AttrMessageKey.String("SO-1001")},
			[]attribute.Key{semconv.MessagingKafkaMessageKeyKey}},
		{"rabbitmq default exchange", "rabbitmq", "", "billing", "send billing",
			[]attribute.KeyValue{semconv.MessagingDestinationName("billing"), semconv.MessagingRabbitMQDestinationRoutingKey("billing")}, nil},
		{"rabbitmq exchange without key", "rabbitmq", "fanout", "", "send fanout",
			[]attribute.KeyValue{semconv.MessagingDestinationName("fanout")}, []attribute.Key{semconv.MessagingRabbitMQDestinationRoutingKeyKey}},
		{"rabbitmq default exchange without key", "rabbitmq", "", "", "send amq.default",
			[]attribute.KeyValue{semconv.MessagingDestinationName("amq.default")}, nil},
		{"kafka", "kafka", "orders", "", "send orders",
			[]attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingDestinationName("orders"), semconv.MessagingKafkaMessageKey("SO-1001")},
			[]attribute.Key{otelforge.AttrMessageKey, semconv.MessagingRabbitMQDestinationRoutingKeyKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tel := newTelemetry(t)
			obs := tel.publisherObserver(t)
			headers := map[string]string{}
			p := publisher.NewPublication(func(k, v string) { headers[k] = v })
			id, corr, cause := uuid.New(), uuid.New(), uuid.New()
			p.System, p.Destination, p.RoutingKey, p.Key = tc.system, tc.exchange, tc.routingKey, []byte("SO-1001")
			p.Lineage.MessageID, p.Lineage.CorrelationID, p.Lineage.CausationID, p.Lineage.Type = id, corr, cause, "order.placed"
			p.BodySize, p.Batch, p.Start = 14, 1, time.Now().Add(-time.Second)
			ctx := obs.PublishStart(context.Background(), p)
			p.Attempts = 2
			obs.PublishRetry(ctx, p, fmt.Errorf("rabbitpub: %w", publisher.ErrUnroutable))
			obs.PublishDone(ctx, p, nil)

			s := tel.one(t, tc.wantName)
			if s.SpanKind() != trace.SpanKindProducer || s.Status().Code != codes.Unset {
				t.Errorf("kind %v status %v, want producer and unset", s.SpanKind(), s.Status())
			}
			wantAttrs(t, s, append(tc.want,
				semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend,
				semconv.MessagingMessageID(id.String()), semconv.MessagingMessageConversationID(corr.String()),
				otelforge.AttrCausationID.String(cause.String()), otelforge.AttrMessageType.String("order.placed"),
				semconv.MessagingMessageBodySize(14), otelforge.AttrAttempts.Int(2))...)
			noAttrs(t, s, append(tc.absent, semconv.ErrorTypeKey)...)
			if ev := s.Events(); len(ev) != 1 || ev[0].Name != "retry" {
				t.Errorf("events %v, want one retry", ev)
			} else if v, _ := attrOf(ev[0].Attributes, semconv.ErrorTypeKey); v.AsString() != "unroutable" {
				t.Errorf("retry error.type %q, want unroutable", v.AsString())
			}
			want := fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID())
			if headers["traceparent"] != want {
				t.Errorf("traceparent header %q, want %q", headers["traceparent"], want)
			}

			ms := tel.metrics(t)
			dest := semconv.MessagingDestinationName(strings.TrimPrefix(tc.wantName, "send "))
			sys := semconv.MessagingSystemKey.String(tc.system)
			if n, pts := count(t, ms["messaging.client.sent.messages"], sys, dest, semconv.MessagingOperationName("send")); n != 1 || pts != 1 {
				t.Errorf("sent messages %d in %d points, want 1", n, pts)
			}
			if h, ok := ms["messaging.client.operation.duration"].Data.(metricdata.Histogram[float64]); !ok || len(h.DataPoints) != 1 ||
				h.DataPoints[0].Count != 1 || h.DataPoints[0].Sum < 1 || !matches(h.DataPoints[0].Attributes, []attribute.KeyValue{sys, dest}) {
				t.Errorf("operation duration %+v, want one of at least 1 s (since the call's start)", ms["messaging.client.operation.duration"].Data)
			}
			if n, _ := count(t, ms[otelforge.MetricPublishRetries], sys, dest); n != 1 {
				t.Errorf("publish retries %d, want 1", n)
			}
		})
	}
}

// A delivery's destination is "{exchange}:{routing key}:{queue}" on
// RabbitMQ, without the empty parts and with a routing key equal to the
// queue given once; the topic on Kafka.
func TestProcessDestination(t *testing.T) {
	for _, tc := range []struct {
		name, system, exchange, routingKey, source string
		want                                       string
	}{
		{"rabbitmq exchange, key and queue", "rabbitmq", "orders", "order.placed", "billing", "orders:order.placed:billing"},
		{"rabbitmq default exchange", "rabbitmq", "", "billing", "billing", "billing"},
		{"rabbitmq default exchange, other key", "rabbitmq", "", "order.placed", "billing", "order.placed:billing"},
		{"rabbitmq exchange, key equal to queue", "rabbitmq", "orders", "billing", "billing", "orders:billing"},
		{"rabbitmq fanout without key", "rabbitmq", "fanout", "", "billing", "fanout:billing"},
		{"kafka", "kafka", "", "", "orders", "orders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tel := newTelemetry(t)
			p := processor(t, func(context.Context, *consumer.Message) error { return nil }, tel.consumerObserver(t, "billing"), nil, "billing")
			m := &consumer.Message{ID: uuid.New(), System: tc.system, Exchange: tc.exchange, RoutingKey: tc.routingKey, Source: tc.source}
			if out, err := deliver(context.Background(), p, m); out != consumer.OutcomeAck {
				t.Fatal(out, err)
			}
			s := tel.one(t, "process "+tc.want)
			wantAttrs(t, s, semconv.MessagingDestinationName(tc.want))
			if n, _ := count(t, tel.metrics(t)["messaging.client.consumed.messages"], semconv.MessagingDestinationName(tc.want)); n != 1 {
				t.Errorf("consumed messages with destination %q: %d, want 1", tc.want, n)
			}
		})
	}
}

func TestPublishFailure(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	b.rec.FailWith(func(publisher.Message) error { return &net.OpError{Op: "dial", Err: errors.New("refused")} })
	if err := b.Publish(context.Background(), placed); err == nil {
		t.Fatal("publish did not fail")
	}
	s := tel.one(t, "send orders")
	wantAttrs(t, s, semconv.ErrorTypeKey.String("*net.OpError"))
	if s.Status().Code != codes.Error || !strings.Contains(s.Status().Description, "refused") {
		t.Errorf("status %v, want an error naming the cause", s.Status())
	}
	ms := tel.metrics(t)
	for _, name := range []string{"messaging.client.sent.messages", "messaging.client.operation.duration"} {
		if n, _ := count(t, ms[name], semconv.ErrorTypeKey.String("*net.OpError")); n != 1 {
			t.Errorf("%s with error.type: %d, want 1", name, n)
		}
	}
}

func TestConsumeSpanAndMetrics(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	m := b.take()[0]
	m.Offset = 41
	p := processor(t, func(context.Context, *consumer.Message) error { return nil }, tel.consumerObserver(t, "billing"), nil, "billing")
	if out, err := deliver(context.Background(), p, m); out != consumer.OutcomeAck {
		t.Fatal(out, err)
	}
	s := tel.one(t, "process orders")
	wantAttrs(t, s, semconv.MessagingSystemKafka, semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName("orders"), semconv.MessagingConsumerGroupName("billing"),
		semconv.MessagingDestinationPartitionID("2"), semconv.MessagingKafkaOffset(41), semconv.MessagingKafkaMessageKey("SO-1001"),
		semconv.MessagingMessageID(m.ID.String()), semconv.MessagingMessageConversationID(m.CorrelationID.String()),
		otelforge.AttrMessageType.String("order.placed"), otelforge.AttrOutcome.String("processed"), otelforge.AttrAttempts.Int(1))
	noAttrs(t, s, semconv.ErrorTypeKey, otelforge.AttrCausationID)
	if s.Status().Code != codes.Unset {
		t.Errorf("status %v", s.Status())
	}
	ms := tel.metrics(t)
	op := []attribute.KeyValue{semconv.MessagingSystemKafka, semconv.MessagingDestinationName("orders"),
		semconv.MessagingConsumerGroupName("billing"), semconv.MessagingDestinationPartitionID("2"), semconv.MessagingOperationName("process")}
	if n, _ := count(t, ms["messaging.client.consumed.messages"], op...); n != 1 {
		t.Errorf("consumed %d, want 1", n)
	}
	if n, _ := count(t, ms["messaging.process.duration"], append(op, otelforge.AttrOutcome.String("processed"))...); n != 1 {
		t.Errorf("process durations with outcome processed: %d, want 1", n)
	}
	if ms["messaging.process.duration"].Unit != "s" || ms["messaging.client.consumed.messages"].Unit != "{message}" {
		t.Errorf("units %q %q", ms["messaging.process.duration"].Unit, ms["messaging.client.consumed.messages"].Unit)
	}
}

// A redelivered message is recorded as a duplicate, in its own span of the
// same trace.
func TestDuplicateDelivery(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "rabbitmq", "", "billing")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	m := b.take()[0]
	runs := 0
	p := processor(t, func(context.Context, *consumer.Message) error { runs++; return nil }, tel.consumerObserver(t, "billing"), nil, "billing")
	for range 2 {
		if out, err := deliver(context.Background(), p, m); out != consumer.OutcomeAck {
			t.Fatal(out, err)
		}
	}
	if runs != 1 {
		t.Fatalf("handler ran %d times, want 1", runs)
	}
	// Published with routing key order.placed on the default exchange, read from queue billing.
	spans := tel.ended("process order.placed:billing")
	if len(spans) != 2 {
		t.Fatalf("%d process spans, want 2", len(spans))
	}
	wantAttrs(t, spans[0], otelforge.AttrOutcome.String("processed"))
	wantAttrs(t, spans[1], otelforge.AttrOutcome.String("duplicate"), otelforge.AttrAttempts.Int(0))
	send := tel.one(t, "send order.placed")
	if spanID(spans[0]) == spanID(spans[1]) {
		t.Error("both deliveries have the same span ID")
	}
	for _, s := range spans {
		if s.Parent().SpanID() != spanID(send) {
			t.Errorf("delivery span parent %v, want the send span %v", s.Parent().SpanID(), spanID(send))
		}
	}
	ms := tel.metrics(t)
	group := semconv.MessagingConsumerGroupName("billing")
	if n, _ := count(t, ms[otelforge.MetricDuplicates], group); n != 1 {
		t.Errorf("duplicates %d, want 1", n)
	}
	if n, _ := count(t, ms["messaging.client.consumed.messages"], group); n != 2 {
		t.Errorf("consumed %d, want 2", n)
	}
	if n, _ := count(t, ms["messaging.process.duration"], otelforge.AttrOutcome.String("duplicate")); n != 1 {
		t.Errorf("duplicate process durations %d, want 1", n)
	}
}

// Trace and span IDs never come from message IDs: publishing the same
// message again, or delivering a message without a trace context again,
// makes new traces.
func TestSameMessageNewTraces(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	for range 2 {
		if err := b.Publish(context.Background(), placed); err != nil {
			t.Fatal(err)
		}
	}
	msgs := b.take()
	if msgs[0].ID != msgs[1].ID {
		t.Fatal("the two publications should carry the same message ID")
	}
	sends := tel.ended("send orders")
	if len(sends) != 2 || traceID(sends[0]) == traceID(sends[1]) || msgs[0].Headers["traceparent"] == msgs[1].Headers["traceparent"] {
		t.Fatalf("two publications of one message share a trace: %v / %v", msgs[0].Headers, msgs[1].Headers)
	}

	// Without trace context (a producer without tracing), each delivery of
	// the same message starts a trace of its own.
	tel.spans.Reset()
	p := processor(t, func(context.Context, *consumer.Message) error { return nil }, tel.consumerObserver(t, "billing"), nil, "billing")
	bare := *msgs[0]
	bare.Headers = nil
	for range 2 {
		if out, err := deliver(context.Background(), p, &bare); out != consumer.OutcomeAck {
			t.Fatal(out, err)
		}
	}
	procs := tel.ended("process orders")
	if len(procs) != 2 || traceID(procs[0]) == traceID(procs[1]) || procs[0].Parent().IsValid() || len(procs[0].Links()) != 0 {
		t.Fatalf("deliveries without a trace context: %d spans, want two root spans in different traces", len(procs))
	}
}

func TestDeadLetter(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("total is negative")
	p := processor(t, func(context.Context, *consumer.Message) error { return consumer.Permanent(bad) }, tel.consumerObserver(t, "billing"), nil, "billing")
	out, err := deliver(context.Background(), p, b.take()[0])
	if out != consumer.OutcomeDeadLetter || !errors.Is(err, bad) {
		t.Fatalf("outcome %v %v, want a dead letter", out, err)
	}
	s := tel.one(t, "process orders")
	wantAttrs(t, s, otelforge.AttrOutcome.String("dead-lettered"), semconv.ErrorTypeKey.String("permanent"))
	if s.Status().Code != codes.Error || !strings.Contains(s.Status().Description, "total is negative") {
		t.Errorf("status %v, want an error with the reason", s.Status())
	}
	ms := tel.metrics(t)
	if n, _ := count(t, ms[otelforge.MetricDeadLetters], semconv.MessagingConsumerGroupName("billing"), semconv.MessagingDestinationName("orders")); n != 1 {
		t.Errorf("dead letters %d, want 1", n)
	}
	if n, _ := count(t, ms["messaging.process.duration"], otelforge.AttrOutcome.String("dead-lettered"), semconv.ErrorTypeKey.String("permanent")); n != 1 {
		t.Errorf("dead-lettered process durations %d, want 1", n)
	}
}

// flakyStore fails the first Claim with a store error and the first
// Complete with a lost lease (giving the claim back, as a takeover that
// then ended would).
type flakyStore struct {
	*dedupe.Memory
	mu                   sync.Mutex
	failClaim, loseLease bool
}

func (s *flakyStore) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	s.mu.Lock()
	fail := s.failClaim
	s.failClaim = false
	s.mu.Unlock()
	if fail {
		return dedupe.Claim{}, errors.New("connection reset")
	}
	return s.Memory.Claim(ctx, k, lease)
}

func (s *flakyStore) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	s.mu.Lock()
	lose := s.loseLease
	s.loseLease = false
	s.mu.Unlock()
	if lose {
		_ = s.Memory.Release(ctx, c)
		return fmt.Errorf("memory: %w", dedupe.ErrLeaseLost)
	}
	return s.Memory.Complete(ctx, c, retention)
}

func TestRetriesAndWaits(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	m := b.take()[0]
	mem := newMemory(t)
	store := &flakyStore{Memory: mem, failClaim: true, loseLease: true}
	// Another consumer holds the claim for a moment.
	if _, err := mem.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: m.ID}, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	runs := 0
	p := processor(t, func(context.Context, *consumer.Message) error {
		runs++
		if runs == 1 {
			return errors.New("payment service unavailable")
		}
		return nil
	}, tel.consumerObserver(t, "billing"), store, "billing")
	if out, err := deliver(context.Background(), p, m); out != consumer.OutcomeAck {
		t.Fatal(out, err)
	}
	// Store error, then lease waits until the other holder's lease ends,
	// then a failed run, then a run whose completion finds the lease lost,
	// then a successful run.
	s := tel.one(t, "process orders")
	seen := map[string]int{}
	for _, ev := range s.Events() {
		seen[ev.Name]++
	}
	if seen["retry"] != 1 || seen["wait for store"] != 2 || seen["wait for lease"] < 1 {
		t.Errorf("events %v, want 1 retry, 2 waits for store (store error, lost lease), at least 1 wait for lease", seen)
	}
	wantAttrs(t, s, otelforge.AttrOutcome.String("processed"), otelforge.AttrAttempts.Int(3))
	ms := tel.metrics(t)
	group := semconv.MessagingConsumerGroupName("billing")
	for name, want := range map[string]int64{
		otelforge.MetricRetries:     1,
		otelforge.MetricStoreErrors: 1,
		otelforge.MetricLeasesLost:  1,
	} {
		if n, _ := count(t, ms[name], group); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
	if n, _ := count(t, ms[otelforge.MetricLeaseWaits], group); n < 1 || int(n) != seen["wait for lease"] {
		t.Errorf("lease waits %d, want as many as the span's events (%d)", n, seen["wait for lease"])
	}
}

// WithLinkedTraces: each delivery starts its own trace, linked to the
// producer's span.
func TestLinkedTraces(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	p := processor(t, func(context.Context, *consumer.Message) error { return nil },
		tel.consumerObserver(t, "billing", otelforge.WithLinkedTraces()), nil, "billing")
	if out, err := deliver(context.Background(), p, b.take()[0]); out != consumer.OutcomeAck {
		t.Fatal(out, err)
	}
	send, proc := tel.one(t, "send orders"), tel.one(t, "process orders")
	if proc.Parent().IsValid() || traceID(proc) == traceID(send) {
		t.Errorf("process span has parent %v in the producer's trace", proc.Parent())
	}
	if l := proc.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != spanID(send) {
		t.Errorf("links %v, want the send span", l)
	}
}

// A delivery processed inside another span keeps that span as parent and
// links to the producer.
func TestAmbientSpanStaysParent(t *testing.T) {
	tel := newTelemetry(t)
	b := newBroker(t, tel.publisherObserver(t), "kafka", "orders", "")
	if err := b.Publish(context.Background(), placed); err != nil {
		t.Fatal(err)
	}
	ctx, ambient := tel.tp.Tracer("test").Start(context.Background(), "poll")
	p := processor(t, func(context.Context, *consumer.Message) error { return nil }, tel.consumerObserver(t, "billing"), nil, "billing")
	if out, err := deliver(ctx, p, b.take()[0]); out != consumer.OutcomeAck {
		t.Fatal(out, err)
	}
	ambient.End()
	send, proc := tel.one(t, "send orders"), tel.one(t, "process orders")
	if proc.Parent().SpanID() != ambient.SpanContext().SpanID() {
		t.Errorf("process span parent %v, want the ambient span", proc.Parent())
	}
	if l := proc.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != spanID(send) {
		t.Errorf("links %v, want the send span", l)
	}
}

// The handler's context carries the process span, so that its own spans
// (a database call) are children of it.
func TestHandlerContextHasProcessSpan(t *testing.T) {
	tel := newTelemetry(t)
	var inHandler trace.SpanContext
	p := processor(t, func(ctx context.Context, _ *consumer.Message) error {
		inHandler = trace.SpanContextFromContext(ctx)
		return nil
	}, tel.consumerObserver(t, "billing"), nil, "billing")
	id := uuid.New()
	if out, err := deliver(context.Background(), p, &consumer.Message{ID: id, CorrelationID: id, System: "rabbitmq", Source: "billing"}); out != consumer.OutcomeAck {
		t.Fatal(out, err)
	}
	if s := tel.one(t, "process billing"); inHandler.SpanID() != spanID(s) {
		t.Errorf("handler context has span %v, want the process span %v", inHandler.SpanID(), spanID(s))
	}
}

func TestPropagators(t *testing.T) {
	defer otel.SetTextMapPropagator(otel.GetTextMapPropagator())
	bag, err := baggage.Parse("tenant=acme")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(t *testing.T, opts ...otelforge.Option) map[string]string {
		tel := newTelemetry(t)
		b := newBroker(t, tel.publisherObserver(t, opts...), "kafka", "orders", "")
		if err := b.Publish(baggage.ContextWithBaggage(context.Background(), bag), placed); err != nil {
			t.Fatal(err)
		}
		return b.take()[0].Headers
	}
	t.Run("no global propagator: trace context", func(t *testing.T) {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
		h := publish(t)
		if h["traceparent"] == "" || h["baggage"] != "" {
			t.Errorf("headers %v, want traceparent only", h)
		}
	})
	t.Run("global propagator", func(t *testing.T) {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
		h := publish(t)
		if h["traceparent"] == "" || h["baggage"] != "tenant=acme" {
			t.Errorf("headers %v, want traceparent and baggage", h)
		}
	})
	t.Run("WithPropagator", func(t *testing.T) {
		otel.SetTextMapPropagator(propagation.TraceContext{})
		h := publish(t, otelforge.WithPropagator(propagation.Baggage{}))
		if h["traceparent"] != "" || h["baggage"] != "tenant=acme" {
			t.Errorf("headers %v, want baggage only", h)
		}
	})
	t.Run("consumer extracts baggage", func(t *testing.T) {
		tel := newTelemetry(t)
		prop := otelforge.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
		b := newBroker(t, tel.publisherObserver(t, prop), "kafka", "orders", "")
		if err := b.Publish(baggage.ContextWithBaggage(context.Background(), bag), placed); err != nil {
			t.Fatal(err)
		}
		var got string
		p := processor(t, func(ctx context.Context, _ *consumer.Message) error {
			got = baggage.FromContext(ctx).Member("tenant").Value()
			return nil
		}, tel.consumerObserver(t, "billing", prop), nil, "billing")
		if out, err := deliver(context.Background(), p, b.take()[0]); out != consumer.OutcomeAck {
			t.Fatal(out, err)
		}
		if got != "acme" {
			t.Errorf("handler baggage tenant = %q, want acme", got)
		}
	})
}

func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func() error
		want string
	}{
		{"nil tracer provider", func() error { _, err := otelforge.NewPublisherObserver(otelforge.WithTracerProvider(nil)); return err }, "WithTracerProvider(nil)"},
		{"nil meter provider", func() error {
			_, err := otelforge.NewConsumerObserver("g", otelforge.WithMeterProvider(nil))
			return err
		}, "WithMeterProvider(nil)"},
		{"nil propagator", func() error { _, err := otelforge.NewConsumerObserver("g", otelforge.WithPropagator(nil)); return err }, "WithPropagator(nil)"},
		{"linked traces on a publisher", func() error { _, err := otelforge.NewPublisherObserver(otelforge.WithLinkedTraces()); return err }, "WithLinkedTraces is not an option of NewPublisherObserver"},
		{"propagator on the outbox", func() error {
			_, err := otelforge.ObserveOutbox(func(context.Context) (int64, time.Duration, error) { return 0, 0, nil }, otelforge.WithPropagator(propagation.TraceContext{}))
			return err
		}, "WithPropagator is not an option of ObserveOutbox"},
		{"invalid attribute", func() error {
			_, err := otelforge.NewPublisherObserver(otelforge.WithAttributes(attribute.KeyValue{}))
			return err
		}, "WithAttributes"},
		{"empty group", func() error { _, err := otelforge.NewConsumerObserver(""); return err }, "empty group"},
		{"nil backlog", func() error { _, err := otelforge.ObserveOutbox(nil); return err }, "nil backlog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.new()
			if err == nil || !strings.HasPrefix(err.Error(), "otelforge: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one starting with otelforge: and naming %q", err, tc.want)
			}
		})
	}
}

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("x"), "_OTHER"},
		{fmt.Errorf("a: %w", errors.New("x")), "_OTHER"},
		{fmt.Errorf("a: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("p: %w", publisher.ErrInvalid), "invalid"},
		{&publisher.PublishError{Err: publisher.ErrUnroutable}, "unroutable"},
		{publisher.ErrClosed, "closed"},
		{&consumer.InFlightError{}, "in_flight"},
		{fmt.Errorf("complete: %w", dedupe.ErrLeaseLost), "lease_lost"},
		{consumer.Permanent(consumer.ErrMissingID), "missing_id"},
		{consumer.Permanent(errors.New("bad")), "permanent"},
		{&consumer.PanicError{Value: 1}, "panic"},
		{fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}), "*net.OpError"},
	} {
		if got := otelforge.ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestObserveOutbox(t *testing.T) {
	tel := newTelemetry(t)
	var mu sync.Mutex
	var fail error
	reg, err := otelforge.ObserveOutbox(func(ctx context.Context) (int64, time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		return 42, 1500 * time.Millisecond, fail
	}, otelforge.WithMeterProvider(tel.mp), otelforge.WithAttributes(attribute.String("uuidforge.outbox.name", "orders")))
	if err != nil {
		t.Fatal(err)
	}
	ms := tel.metrics(t)
	bl, ok1 := ms[otelforge.MetricOutboxBacklog].Data.(metricdata.Gauge[int64])
	age, ok2 := ms[otelforge.MetricOutboxOldest].Data.(metricdata.Gauge[float64])
	if !ok1 || !ok2 || len(bl.DataPoints) != 1 || len(age.DataPoints) != 1 {
		t.Fatalf("gauges %+v %+v", ms[otelforge.MetricOutboxBacklog], ms[otelforge.MetricOutboxOldest])
	}
	if bl.DataPoints[0].Value != 42 || age.DataPoints[0].Value != 1.5 ||
		!matches(bl.DataPoints[0].Attributes, []attribute.KeyValue{attribute.String("uuidforge.outbox.name", "orders")}) {
		t.Errorf("backlog %+v, oldest %+v", bl.DataPoints[0], age.DataPoints[0])
	}
	if ms[otelforge.MetricOutboxOldest].Unit != "s" || ms[otelforge.MetricOutboxBacklog].Unit != "{message}" {
		t.Errorf("units %q %q", ms[otelforge.MetricOutboxOldest].Unit, ms[otelforge.MetricOutboxBacklog].Unit)
	}

	// A failing backlog function reports nothing rather than a stale or zero value.
	mu.Lock()
	fail = errors.New("database down")
	mu.Unlock()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err == nil || !strings.Contains(err.Error(), "database down") {
		t.Errorf("collect error %v, want the backlog function's", err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == otelforge.MetricOutboxBacklog && len(g.DataPoints) > 0 {
				t.Errorf("backlog reported %+v while the function fails", g.DataPoints)
			}
		}
	}

	mu.Lock()
	fail = nil
	mu.Unlock()
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	ms = tel.metrics(t)
	if g, ok := ms[otelforge.MetricOutboxBacklog].Data.(metricdata.Gauge[int64]); ok && len(g.DataPoints) > 0 {
		t.Errorf("backlog reported %+v after Unregister", g.DataPoints)
	}
}

// The observers are used from many goroutines at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	tel := newTelemetry(t)
	pub := tel.publisherObserver(t)
	sub := tel.consumerObserver(t, "billing")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := newBroker(t, pub, "kafka", fmt.Sprintf("orders-%d", w%3), "")
			p := processor(t, func(context.Context, *consumer.Message) error { return nil }, sub, nil, "billing")
			for i := range each {
				if err := b.Publish(context.Background(), publisher.Message{Type: "order.placed", Key: []any{w, i}}); err != nil {
					t.Error(err)
					return
				}
				for _, m := range b.take() {
					if out, err := deliver(context.Background(), p, m); out != consumer.OutcomeAck {
						t.Error(out, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := len(tel.spans.Ended()); n != 2*workers*each {
		t.Errorf("%d spans, want %d", n, 2*workers*each)
	}
	if n, _ := count(t, tel.metrics(t)["messaging.client.consumed.messages"]); n != workers*each {
		t.Errorf("consumed %d, want %d", n, workers*each)
	}
}

// The package documentation lists every instrument with its kind and unit:
// the names are what dashboards and alerts depend on.
func TestDocListsEveryInstrument(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "doc.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^\t([a-z_.]+)\s+(counter|histogram|gauge)\s+(\S+)\s`)
	documented := map[string]string{}
	for _, line := range strings.Split(f.Doc.Text(), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = m[2] + " " + m[3]
		}
	}

	// Exercise every instrument.
	tel := newTelemetry(t)
	pub := tel.publisherObserver(t)
	pubCtx := pub.PublishStart(context.Background(), publisher.NewPublication(nil))
	p := publisher.NewPublication(nil)
	p.System, p.Destination, p.Start = "kafka", "orders", time.Now()
	pub.PublishRetry(pubCtx, p, errors.New("x"))
	pub.PublishDone(pubCtx, p, nil)
	sub := tel.consumerObserver(t, "billing")
	m := &consumer.Message{System: "kafka", Source: "orders"}
	ctx := sub.DeliveryStart(context.Background(), m)
	for _, a := range []consumer.Attempt{{Next: consumer.NextRetry}, {Next: consumer.NextWaitLease}, {Next: consumer.NextWaitStore},
		{Next: consumer.NextWaitStore, LeaseLost: true}} {
		sub.AttemptDone(ctx, m, a)
	}
	sub.DeliveryDone(ctx, m, consumer.Delivery{Result: consumer.Duplicate})
	sub.DeliveryDone(ctx, m, consumer.Delivery{Result: consumer.DeadLettered})
	if _, err := otelforge.ObserveOutbox(func(context.Context) (int64, time.Duration, error) { return 1, 0, nil }, otelforge.WithMeterProvider(tel.mp)); err != nil {
		t.Fatal(err)
	}

	produced := map[string]string{}
	for name, m := range tel.metrics(t) {
		kind := "counter"
		switch m.Data.(type) {
		case metricdata.Histogram[float64]:
			kind = "histogram"
		case metricdata.Gauge[int64], metricdata.Gauge[float64]:
			kind = "gauge"
		}
		produced[name] = kind + " " + m.Unit
	}
	for name, want := range produced {
		if documented[name] != want {
			t.Errorf("%s is a %s, documented as %q", name, want, documented[name])
		}
	}
	for name := range documented {
		if _, ok := produced[name]; !ok {
			t.Errorf("%s is documented but not produced", name)
		}
	}
}

// A delivery handed back to the broker (the consumer stops) is a failed
// process span; WithAttributes labels the observer's metrics.
func TestAbandoned(t *testing.T) {
	tel := newTelemetry(t)
	obs := tel.consumerObserver(t, "billing", otelforge.WithAttributes(attribute.String("service", "billing-api")))
	stop, cancel := context.WithCancel(context.Background())
	p := processor(t, func(context.Context, *consumer.Message) error {
		cancel()
		return errors.New("interrupted")
	}, obs, nil, "billing")
	id := uuid.New()
	m := &consumer.Message{ID: id, CorrelationID: id, System: "kafka", Source: "orders"}
	work := p.Begin(context.Background(), m)
	out, err := p.Process(stop, work, m)
	if out != consumer.OutcomeAbandon {
		t.Fatalf("outcome %v %v, want abandon", out, err)
	}
	p.End(work, m, out, context.Cause(stop))
	s := tel.one(t, "process orders")
	wantAttrs(t, s, otelforge.AttrOutcome.String("abandoned"), semconv.ErrorTypeKey.String("canceled"))
	if s.Status().Code != codes.Error {
		t.Errorf("status %v, want error", s.Status())
	}
	if n, _ := count(t, tel.metrics(t)["messaging.process.duration"], otelforge.AttrOutcome.String("abandoned"),
		semconv.ErrorTypeKey.String("canceled"), attribute.String("service", "billing-api")); n != 1 {
		t.Errorf("abandoned process durations with the observer's attributes: %d, want 1", n)
	}
}
