package rabbitmq

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueType is a RabbitMQ queue type.
type QueueType string

const (
	// Classic is RabbitMQ's classic queue (the default).
	Classic QueueType = "classic"
	// Quorum is a replicated quorum queue: durable, replicated over a
	// cluster's nodes, with a delivery limit that moves a message which
	// keeps failing to its dead-letter exchange.
	Quorum QueueType = "quorum"
)

// Exchange declares an exchange.
type Exchange struct {
	// Name is the exchange's name; required.
	Name string
	// Kind is "direct", "topic", "fanout" or "headers"; "" means "direct".
	Kind string
	// Transient makes a non-durable exchange. Default: durable.
	Transient bool
	// AutoDelete deletes the exchange when its last binding is removed.
	AutoDelete bool
	// Args are extra arguments (e.g. "alternate-exchange").
	Args amqp.Table
}

// Queue declares a queue.
type Queue struct {
	// Name is the queue's name; required.
	Name string
	// Type is [Classic] (the default) or [Quorum].
	Type QueueType
	// Transient makes a non-durable classic queue. Default: durable.
	// Quorum queues are always durable.
	Transient bool
	// AutoDelete and Exclusive have AMQP's meaning; classic queues only.
	AutoDelete, Exclusive bool
	// DeadLetterExchange and DeadLetterRoutingKey set the queue's
	// x-dead-letter-exchange and x-dead-letter-routing-key: where the
	// broker moves a rejected, expired or (quorum) too often delivered
	// message. "" and "" leave them unset.
	DeadLetterExchange, DeadLetterRoutingKey string
	// DeliveryLimit sets a quorum queue's x-delivery-limit: after that many
	// failed deliveries (including deliveries to a consumer that died or
	// lost its connection) the broker dead-letters the message. 0: the
	// broker's default. Quorum queues only.
	DeliveryLimit int
	// Args are extra arguments, merged after the fields above.
	Args amqp.Table
}

// Binding binds a queue to an exchange.
type Binding struct {
	// Exchange and Queue are required.
	Exchange, Queue string
	// Key is the routing key (a pattern for topic exchanges).
	Key string
	// Args are extra arguments (headers exchanges).
	Args amqp.Table
}

// Topology is what a publisher or consumer declares on every connect, so
// that a fresh broker, or a node that lost its definitions, is set up before
// the first message: exchanges first, then queues, then bindings.
// Declarations are idempotent; declaring an existing entity with other
// arguments is an error from the broker (406 PRECONDITION_FAILED) that ends
// the connection attempt and is reported, not retried blindly.
type Topology struct {
	// Exchanges are declared first, in order.
	Exchanges []Exchange
	// Queues are declared after the exchanges, in order.
	Queues []Queue
	// Bindings are declared last, in order; each names an exchange and a
	// queue declared above or existing already.
	Bindings []Binding
}

// IsZero reports whether t declares nothing.
func (t Topology) IsZero() bool {
	return len(t.Exchanges) == 0 && len(t.Queues) == 0 && len(t.Bindings) == 0
}

// Merge returns t with the declarations of o appended.
func (t Topology) Merge(o Topology) Topology {
	return Topology{
		Exchanges: append(append([]Exchange(nil), t.Exchanges...), o.Exchanges...),
		Queues:    append(append([]Queue(nil), t.Queues...), o.Queues...),
		Bindings:  append(append([]Binding(nil), t.Bindings...), o.Bindings...),
	}
}

// Validate checks t without a broker: names present and within AMQP's 255
// bytes, known kinds and queue types, and quorum-only settings on quorum
// queues.
func (t Topology) Validate() error {
	var errs []error
	for _, e := range t.Exchanges {
		switch {
		case e.Name == "":
			errs = append(errs, errors.New("exchange without a name (the default exchange needs no declaration)"))
		case len(e.Name) > 255:
			errs = append(errs, fmt.Errorf("exchange %.32q...: name longer than 255 bytes", e.Name))
		}
		switch e.Kind {
		case "", amqp.ExchangeDirect, amqp.ExchangeTopic, amqp.ExchangeFanout, amqp.ExchangeHeaders:
		default:
			errs = append(errs, fmt.Errorf("exchange %q: unknown kind %q", e.Name, e.Kind))
		}
	}
	for _, q := range t.Queues {
		switch {
		case q.Name == "":
			errs = append(errs, errors.New("queue without a name"))
		case len(q.Name) > 255:
			errs = append(errs, fmt.Errorf("queue %.32q...: name longer than 255 bytes", q.Name))
		}
		switch q.Type {
		case "", Classic:
			if q.DeliveryLimit != 0 {
				errs = append(errs, fmt.Errorf("queue %q: DeliveryLimit needs a quorum queue", q.Name))
			}
		case Quorum:
			if q.Transient || q.AutoDelete || q.Exclusive {
				errs = append(errs, fmt.Errorf("queue %q: a quorum queue is durable, not auto-deleted and not exclusive", q.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("queue %q: unknown type %q", q.Name, q.Type))
		}
		if q.DeliveryLimit < 0 {
			errs = append(errs, fmt.Errorf("queue %q: negative DeliveryLimit", q.Name))
		}
	}
	for _, b := range t.Bindings {
		if b.Exchange == "" || b.Queue == "" {
			errs = append(errs, fmt.Errorf("binding %q -> %q: exchange and queue are required", b.Exchange, b.Queue))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("rabbitmq: topology: %w", errors.Join(errs...))
	}
	return nil
}

// args returns the queue arguments q declares.
func (q Queue) args() amqp.Table {
	args := amqp.Table{}
	if q.Type == Quorum {
		args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
	}
	if q.DeadLetterExchange != "" || q.DeadLetterRoutingKey != "" {
		args["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	if q.DeadLetterRoutingKey != "" {
		args["x-dead-letter-routing-key"] = q.DeadLetterRoutingKey
	}
	if q.DeliveryLimit > 0 {
		args["x-delivery-limit"] = int64(q.DeliveryLimit)
	}
	for k, v := range q.Args {
		args[k] = v
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

// Declare declares t on ch: exchanges, then queues, then bindings. The first
// error ends it (the broker closes the channel on a failed declaration).
func (t Topology) Declare(ch *amqp.Channel) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for _, e := range t.Exchanges {
		kind := e.Kind
		if kind == "" {
			kind = amqp.ExchangeDirect
		}
		if err := ch.ExchangeDeclare(e.Name, kind, !e.Transient, e.AutoDelete, false, false, e.Args); err != nil {
			return fmt.Errorf("rabbitmq: declare exchange %q: %w", e.Name, ClassifyDeclaration(err))
		}
	}
	for _, q := range t.Queues {
		durable := !q.Transient || q.Type == Quorum
		if _, err := ch.QueueDeclare(q.Name, durable, q.AutoDelete, q.Exclusive, false, q.args()); err != nil {
			return fmt.Errorf("rabbitmq: declare queue %q: %w", q.Name, ClassifyDeclaration(err))
		}
	}
	for _, b := range t.Bindings {
		if err := ch.QueueBind(b.Queue, b.Key, b.Exchange, false, b.Args); err != nil {
			return fmt.Errorf("rabbitmq: bind queue %q to exchange %q with key %q: %w", b.Queue, b.Exchange, b.Key, ClassifyDeclaration(err))
		}
	}
	return nil
}
