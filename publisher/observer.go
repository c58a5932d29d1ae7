package publisher

import (
	"context"
	"time"

	"github.com/uuidforge/uuidforge/internal/fanout"
	"github.com/uuidforge/uuidforge/lineage"
)

// Observer receives publish events, for metrics and tracing (package
// otelforge adapts it to OpenTelemetry). Its methods run synchronously on
// the publishing goroutine: they must be quick and safe for concurrent use.
// Without an observer a publisher does no observer work at all.
type Observer interface {
	// PublishStart is called for each message of a Publish or PublishBatch
	// call once it is stamped, before its first attempt. Headers set with
	// [Publication.SetHeader] travel with the message (a trace context);
	// the returned context is the one passed to PublishRetry and
	// PublishDone for this message.
	PublishStart(ctx context.Context, p *Publication) context.Context
	// PublishRetry is called each time the message is to be published
	// again after a failed attempt (err).
	PublishRetry(ctx context.Context, p *Publication, err error)
	// PublishDone is called once per message with its final result: nil
	// once the broker confirmed it.
	PublishDone(ctx context.Context, p *Publication, err error)
}

// Publication describes one message being published, for an [Observer].
// The transport fills it in and updates Attempts on the publishing
// goroutine, between the observer's calls, so an observer reads it during
// its calls and does not change its fields (it adds headers with
// [Publication.SetHeader]).
type Publication struct {
	// System is the messaging system: "rabbitmq" or "kafka", or "outbox"
	// for a message a pgoutbox.Publisher stored for a relay to send.
	System string
	// Destination is the exchange ("" for the default exchange) or topic.
	Destination string
	// RoutingKey is the RabbitMQ routing key; empty on Kafka.
	RoutingKey string
	// Key is the message key as sent: the Kafka record key, or the
	// message-key header on RabbitMQ; nil when the message has none.
	Key []byte
	// Lineage holds the message's IDs and type.
	Lineage lineage.Lineage
	// BodySize is the body's length in bytes.
	BodySize int
	// Batch is the number of messages of the call (1 for Publish).
	Batch int
	// Start is when the call began.
	Start time.Time
	// Attempts is the number of attempts made so far.
	Attempts int

	setHeader func(name, value string)
}

// NewPublication returns a Publication whose SetHeader calls set. Transports
// use it; set receives the headers an observer adds.
func NewPublication(set func(name, value string)) *Publication {
	return &Publication{setHeader: set}
}

// SetHeader adds a header to the message as it will be sent (for example
// W3C traceparent). Reserved names ([lineage] headers) are ignored.
func (p *Publication) SetHeader(name, value string) {
	if p.setHeader == nil || name == "" || reserved(name) {
		return
	}
	p.setHeader(name, value)
}

// JoinObservers returns an Observer that passes every event to each of obs
// in order, skipping nil ones; nil when none is left.
func JoinObservers(obs ...Observer) Observer {
	all := fanout.Flatten[Observer, multiObserver](obs)
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	return all
}

type multiObserver []Observer

func (m multiObserver) PublishStart(ctx context.Context, p *Publication) context.Context {
	for _, o := range m {
		ctx = o.PublishStart(ctx, p)
	}
	return ctx
}

func (m multiObserver) PublishRetry(ctx context.Context, p *Publication, err error) {
	for _, o := range m {
		o.PublishRetry(ctx, p, err)
	}
}

func (m multiObserver) PublishDone(ctx context.Context, p *Publication, err error) {
	for _, o := range m {
		o.PublishDone(ctx, p, err)
	}
}
