package otelforge

import (
	"context"
	"errors"
	"reflect"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/publisher"
)

// Attribute keys of our own namespace, uuidforge.*, for what the semantic
// conventions do not name.
const (
	// AttrCausationID is the message's causation ID: the ID of the message
	// whose processing produced it. Absent on the first message of a chain.
	AttrCausationID = attribute.Key("uuidforge.causation_id")
	// AttrMessageType is the message type ("order.created").
	AttrMessageType = attribute.Key("uuidforge.message.type")
	// AttrMessageKey is the business key on RabbitMQ, in its wire form
	// (publisher.KeyBytes), when it is valid UTF-8; on Kafka the key is
	// messaging.kafka.message.key.
	AttrMessageKey = attribute.Key("uuidforge.message.key")
	// AttrContentID is true when the consumer computed the message ID from
	// its content because the producer sent none.
	AttrContentID = attribute.Key("uuidforge.content_id")
	// AttrOutcome is how a delivery ended: "processed", "duplicate",
	// "dead-lettered" or "abandoned" (consumer.Result).
	AttrOutcome = attribute.Key("uuidforge.outcome")
	// AttrAttempts is the number of attempts: handler runs of a delivery,
	// or publish attempts of a message.
	AttrAttempts = attribute.Key("uuidforge.attempts")
	// AttrAttempt is the number of the attempt an event describes.
	AttrAttempt = attribute.Key("uuidforge.attempt")
	// AttrWait is how long the message waits after an attempt, in seconds.
	AttrWait = attribute.Key("uuidforge.wait")
	// AttrLeaseLost is true on the event of an attempt whose handler
	// succeeded but whose completion could not be stored because the claim's
	// lease had been taken over.
	AttrLeaseLost = attribute.Key("uuidforge.lease_lost")
	// AttrRedelivered is true when RabbitMQ says it delivered the message
	// before.
	AttrRedelivered = attribute.Key("uuidforge.redelivered")
)

// Operation names (messaging.operation.name) of the spans and metrics.
const (
	OperationSend    = "send"
	OperationProcess = "process"
)

// Systems, as publisher.Publication.System and consumer.Message.System give
// them.
const (
	systemRabbitMQ = "rabbitmq"
	systemKafka    = "kafka"
)

// sendDestination is messaging.destination.name of a publication: the topic
// on Kafka; on RabbitMQ, as semantic conventions v1.43.0 say for the
// producer side, "{exchange}:{routing key}", or the one of them that is not
// empty, or "amq.default" for the default exchange without a routing key.
func sendDestination(system, exchange, routingKey string) string {
	if system != systemRabbitMQ {
		return exchange
	}
	switch {
	case exchange != "" && routingKey != "":
		return exchange + ":" + routingKey
	case exchange != "":
		return exchange
	case routingKey != "":
		return routingKey
	}
	return "amq.default"
}

// processDestination is messaging.destination.name of a delivery: the topic
// on Kafka; on RabbitMQ "{exchange}:{routing key}:{queue}" with the empty
// parts left out and a routing key equal to the queue name given once, as
// semantic conventions v1.43.0 say for the consumer side.
func processDestination(system, exchange, source, routingKey string) string {
	if system != systemRabbitMQ {
		return source
	}
	if routingKey == source {
		routingKey = ""
	}
	dest := exchange
	for _, part := range []string{routingKey, source} {
		switch {
		case part == "":
		case dest == "":
			dest = part
		default:
			dest += ":" + part
		}
	}
	return dest
}

// spanName is "{operation} {destination}", or the operation alone when the
// destination is empty.
func spanName(op, dest string) string {
	if dest == "" {
		return op
	}
	return op + " " + dest
}

// ErrorType returns the error.type attribute value this package records for
// err: a fixed name for the errors callers of this module branch on, else
// the Go type of the outermost error of its chain that is not a mere
// wrapper (errors.New, fmt.Errorf, errors.Join — whose first error is
// followed —, publisher.PublishError),
// else "_OTHER":
//
//	"timeout"        context.DeadlineExceeded
//	"canceled"       context.Canceled
//	"invalid"        publisher.ErrInvalid
//	"unroutable"     publisher.ErrUnroutable
//	"closed"         publisher.ErrClosed, dedupe.ErrClosed
//	"in_flight"      consumer.ErrInFlight
//	"lease_lost"     dedupe.ErrLeaseLost
//	"store"          consumer.ErrStore (other store failures)
//	"missing_id"     consumer.ErrMissingID
//	"malformed_id"   consumer.ErrMalformedID
//	"forged_id"      consumer.ErrForgedID
//	"panic"          *consumer.PanicError
//	"permanent"      any other error marked with consumer.Permanent
//	"*net.OpError"   (for example) the type of the first error that is not a wrapper
//	"_OTHER"         an error made only of wrappers and errors.New
//
// It returns "" for nil.
func ErrorType(err error) string {
	if err == nil {
		return ""
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	var pe *consumer.PanicError
	if errors.As(err, &pe) {
		return "panic"
	}
	if consumer.IsPermanent(err) {
		return "permanent"
	}
	for e := err; e != nil; e = unwrap(e) {
		if t := reflect.TypeOf(e).String(); !wrappers[t] {
			return t
		}
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// unwrap returns the error e wraps, or the first of those it joins.
func unwrap(e error) error {
	switch u := e.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap()
	case interface{ Unwrap() []error }:
		if errs := u.Unwrap(); len(errs) > 0 {
			return errs[0]
		}
	}
	return nil
}

// wrappers are error types that say nothing about the kind of failure.
var wrappers = map[string]bool{
	"*errors.errorString":      true,
	"*fmt.wrapError":           true,
	"*fmt.wrapErrors":          true,
	"*errors.joinError":        true,
	"*publisher.PublishError":  true,
	"*consumer.PermanentError": true,
}

var sentinels = []struct {
	err  error
	name string
}{
	{context.DeadlineExceeded, "timeout"},
	{context.Canceled, "canceled"},
	{publisher.ErrInvalid, "invalid"},
	{publisher.ErrUnroutable, "unroutable"},
	{publisher.ErrClosed, "closed"},
	{dedupe.ErrClosed, "closed"},
	{consumer.ErrInFlight, "in_flight"},
	{dedupe.ErrLeaseLost, "lease_lost"},
	{consumer.ErrStore, "store"},
	{consumer.ErrMissingID, "missing_id"},
	{consumer.ErrMalformedID, "malformed_id"},
	{consumer.ErrForgedID, "forged_id"},
}

// maxRoutes bounds each observer's cache of per-destination names and
// attribute sets; past it they are computed for each message.
const maxRoutes = 4096

// cache keeps what an observer computes once per destination (names,
// attribute sets), so the per-message path allocates less. Safe for
// concurrent use.
type cache[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]*V
}

func (c *cache[K, V]) get(k K, build func(K) *V) *V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = build(k)
	c.mu.Lock()
	if c.m == nil {
		c.m = map[K]*V{}
	}
	if old, ok := c.m[k]; ok {
		v = old
	} else if len(c.m) < maxRoutes {
		c.m[k] = v
	}
	c.mu.Unlock()
	return v
}

// set returns the attribute set of kvs plus the observer's own attributes
// (WithAttributes).
func set(extra []attribute.KeyValue, kvs ...attribute.KeyValue) attribute.Set {
	if len(extra) > 0 {
		kvs = append(kvs, extra...)
	}
	return attribute.NewSet(kvs...)
}
