// Package otelforge adapts the observer hooks of packages publisher and
// consumer to OpenTelemetry: traces that follow a message from its producer
// through every consumer and the messages their handlers publish (one trace
// A → B → C), the messaging metrics of the semantic conventions, and
// counters for what deduplication decides. The core packages (forge,
// lineage, publisher, consumer, dedupe) never import OpenTelemetry; only a
// program that imports this package compiles it.
//
//	pubObs, err := otelforge.NewPublisherObserver()
//	pub, err := rabbitpub.New(url, gen, publisher.WithObserver(pubObs))
//
//	subObs, err := otelforge.NewConsumerObserver("billing")
//	sub, err := rabbitsub.New(url, "billing", handler, consumer.WithObserver(subObs), ...)
//
//	reg, err := otelforge.ObserveOutbox(backlog) // outbox gauges; backlog: a BacklogFunc
//
// By default the observers use the global tracer and meter providers and
// the global propagator (see [WithPropagator] for when W3C Trace Context
// is used instead); [WithTracerProvider], [WithMeterProvider] and
// [WithPropagator] choose others. To serve the metrics to Prometheus, build
// the meter provider on the OpenTelemetry Prometheus exporter
// (go.opentelemetry.io/otel/exporters/prometheus) and serve its registry
// with promhttp, as the Prometheus example shows.
//
// # Semantic conventions
//
// Spans, metrics and attributes follow the OpenTelemetry semantic
// conventions v1.43.0 (package go.opentelemetry.io/otel/semconv/v1.43.0,
// schema URL https://opentelemetry.io/schemas/1.43.0), the messaging
// conventions, whose status is Development. What they do not name is in our
// own namespace, uuidforge.* (the Attr* keys and Metric* names).
//
// messaging.destination.name is the Kafka topic. On RabbitMQ, as v1.43.0
// says: when publishing, "{exchange}:{routing key}", or the one of the two
// that is not empty, or "amq.default" (the default exchange without a
// routing key); when consuming, "{exchange}:{routing key}:{queue}"
// (consumer.Message.Exchange, RoutingKey and Source), with the empty parts
// left out and a routing key equal to the queue name given once: "billing"
// for a message published to the default exchange with routing key
// "billing", "orders:order.placed:billing" for one published to exchange
// "orders" with routing key "order.placed" and consumed from queue
// "billing".
//
// # Spans
//
// Publishing: one PRODUCER span per message, named "send {destination}",
// from the moment the publisher has stamped it (PublishStart, before its
// first attempt) to the broker's confirmation or the publisher giving up. It
// is a child of the span in the publishing context — the handler's "process" span when a
// handler publishes. Its context is injected into the message's headers
// with the propagator (W3C traceparent and tracestate by default), through
// publisher.Publication.SetHeader, so it travels in the AMQP headers table
// or the Kafka record headers; being the message's creation context, the
// span is a PRODUCER span, and no separate "create" span is made. A message
// of a batch gets a span of its own, like a single message.
//
// A pgoutbox.Publisher given the observer reports messaging.system "outbox"
// and its destination's name as messaging.destination.name: its span and
// metrics cover the enqueue (the statement in the caller's transaction, not
// the later publish), and the trace context is stored in the record's
// headers, which the relay publishes. Attributes:
//
//	messaging.system                           "rabbitmq", "kafka" or "outbox"
//	messaging.operation.name                   "send"
//	messaging.operation.type                   "send"
//	messaging.destination.name                 see above
//	messaging.rabbitmq.destination.routing_key the routing key, when not empty
//	messaging.kafka.message.key                the record key (Kafka), when valid UTF-8
//	uuidforge.message.key                      the message-key header (RabbitMQ), when valid UTF-8
//	messaging.message.id                       the message ID
//	messaging.message.conversation_id          the correlation ID
//	uuidforge.causation_id                     the causation ID, when not nil
//	uuidforge.message.type                     the message type
//	messaging.message.body.size                the body's size in bytes
//	uuidforge.attempts                         publish attempts made
//	error.type                                 on failure (see [ErrorType]), with an Error status
//
// Each attempt that failed and is retried adds a "retry" event
// (uuidforge.attempt, error.type, exception.message).
//
// Consuming: one CONSUMER span per delivery, named "process
// {destination}", from consumer.Processor.Begin to End, current in the
// context the handler runs with, so that what the handler publishes is its
// child. It links to the creation context extracted from the message's
// headers and, unless told otherwise, is also its child: v1.43.0 makes the
// link the default correlation and allows the creation context as parent of
// a "process" span for a single message; we make it the parent so that one
// chain of messages is one trace. It is not the parent when the context
// given to Begin already has a span (processing within another operation:
// that span stays the parent, as the conventions recommend) or with
// [WithLinkedTraces]. A delivery without a trace context starts a new
// trace. Attributes:
//
//	messaging.system                           "rabbitmq" or "kafka"
//	messaging.operation.name                   "process"
//	messaging.operation.type                   "process"
//	messaging.destination.name                 see above
//	messaging.consumer.group.name              the group given to NewConsumerObserver
//	messaging.destination.partition.id         the partition (Kafka)
//	messaging.kafka.offset                     the offset (Kafka)
//	messaging.rabbitmq.destination.routing_key the routing key, when not empty
//	messaging.kafka.message.key, uuidforge.message.key   as when publishing
//	uuidforge.redelivered                      true when RabbitMQ redelivered the message
//	messaging.message.body.size                the body's size in bytes
//	messaging.message.id, messaging.message.conversation_id, uuidforge.causation_id,
//	uuidforge.message.type                     set when the delivery starts if the transport has read the IDs
//	                                           before Begin (rabbitsub does), and when it ends
//	uuidforge.content_id                       true when the ID was computed from the content
//	uuidforge.outcome                          "processed", "duplicate", "dead-lettered" or "abandoned"
//	uuidforge.attempts                         handler runs
//	error.type                                 when dead-lettered or abandoned (see [ErrorType]), with an Error status
//
// Each attempt that did not settle the delivery adds an event named after
// what happens next — "retry", "wait for lease" or "wait for store" — with
// uuidforge.attempt, uuidforge.wait (seconds), error.type,
// exception.message and, when the lease was lost, uuidforge.lease_lost.
//
// Trace and span IDs come from the tracer provider's ID generator (random
// by default) and never from message IDs: a message published again (a
// retried request, a replay, an outbox relay) gets a new span and, outside
// a trace, a new trace; a message delivered again gets a new "process"
// span.
//
// # Metrics
//
// Durations are histograms in seconds with the bucket boundaries the
// conventions advise (5 ms to 10 s). Every metric also carries the
// attributes given with [WithAttributes].
//
//	messaging.client.operation.duration  histogram  s          publishing, from the start of the call to the broker's confirmation or failure
//	    messaging.system, messaging.operation.name "send", messaging.operation.type "send",
//	    messaging.destination.name, error.type (on failure)
//	messaging.client.sent.messages       counter    {message}  messages published (error.type: not confirmed)
//	    as messaging.client.operation.duration
//	uuidforge.publisher.retries          counter    {attempt}  publish attempts that failed and were retried
//	    messaging.system, messaging.destination.name
//	messaging.client.consumed.messages   counter    {message}  deliveries handed to the consumer, counted when processing starts
//	    messaging.system, messaging.operation.name "process", messaging.operation.type "process",
//	    messaging.destination.name, messaging.consumer.group.name,
//	    messaging.destination.partition.id (Kafka)
//	messaging.process.duration           histogram  s          deliveries, from Begin to End (retries and waits included)
//	    as messaging.client.consumed.messages, plus uuidforge.outcome and
//	    error.type (dead-lettered or abandoned)
//	uuidforge.consumer.retries           counter    {attempt}  handler runs that failed and are retried
//	uuidforge.consumer.duplicates        counter    {message}  deliveries skipped as duplicates
//	uuidforge.consumer.lease_waits       counter    {wait}     waits for another consumer's lease
//	uuidforge.consumer.store_errors      counter    {error}    waits for a failing dedupe store (lost leases not included)
//	uuidforge.consumer.leases_lost       counter    {lease}    completions refused because the lease was taken over
//	uuidforge.consumer.dead_letters      counter    {message}  deliveries dead-lettered
//	    all six: messaging.system, messaging.destination.name, messaging.consumer.group.name
//	uuidforge.outbox.backlog             gauge      {message}  messages waiting in the outbox ([ObserveOutbox])
//	uuidforge.outbox.oldest_age          gauge      s          age of the oldest waiting message ([ObserveOutbox])
//	    only the attributes given with WithAttributes
//
// # Cost
//
// Without an observer the publishers and consumers do no observer work (the
// benchmarks in packages consumer and publisher measure it). With these
// observers, each message costs a span (nothing is recorded when the
// tracer provider does not sample it) and a few metric updates; names and
// attribute sets are computed once per destination.
package otelforge
