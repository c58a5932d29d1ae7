package rabbitsub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// EnvelopeContentType is the content type of a dead letter whose body is an
// envelope holding the original message (see the package documentation).
const EnvelopeContentType = "application/vnd.uuidforge.dead-letter+json"

// EnvelopeVersion is the version of the envelope format this package
// writes; ParseDeadLetter reads this version only.
const EnvelopeVersion = 1

// ErrNotDeadLetter is returned by [ParseDeadLetter] for a message that is
// neither a dead letter of this package nor one the broker dead-lettered.
var ErrNotDeadLetter = errors.New("rabbitsub: not a dead letter")

// DeadLetter is a dead letter as [ParseDeadLetter] reads it: the original
// message and why it was dead-lettered.
type DeadLetter struct {
	// Message is the original message: its properties, headers and body,
	// ready to publish again. A plain dead letter does not keep the
	// original's Expiration (a dead letter must not expire) and is always
	// persistent; an envelope keeps every property.
	Message amqp.Publishing
	// Exchange and RoutingKey are the ones the original was published
	// with; known for envelopes and for messages the broker dead-lettered,
	// empty for plain dead letters.
	Exchange, RoutingKey string
	// Reason says why the message was dead-lettered (at most
	// [consumer.MaxReasonBytes] bytes). For a message the broker
	// dead-lettered it is "dead-lettered by the broker: " and the broker's
	// reason (rejected, expired, maxlen, delivery_limit).
	Reason string
	// Attempts is how often the handler ran; 0 when it never did (a
	// malformed ID, unreadable headers, or the broker dead-lettered it).
	Attempts int
	// Queue is the queue the original was consumed from.
	Queue string
	// Envelope reports that the dead letter's body was an envelope.
	Envelope bool
	// RawHeaders is, for an envelope, the original header table exactly as
	// the envelope holds it (AMQP 0-9-1 field-table encoding, its 4-byte
	// length first); nil otherwise.
	RawHeaders []byte
}

// ParseDeadLetter reads a dead letter that a [Consumer] stored (a plain copy
// or an envelope, see the package documentation) or that the broker
// dead-lettered (it carries an x-death header). For an envelope whose header
// table cannot be decoded (nested deeper than 4096 levels), it returns the
// DeadLetter with everything else filled in, RawHeaders set, and an error.
// It returns an error wrapping [ErrNotDeadLetter] for any other message.
func ParseDeadLetter(d amqp.Delivery) (DeadLetter, error) {
	if d.ContentType == EnvelopeContentType {
		return parseEnvelope(d.Body)
	}
	if reason, ok := d.Headers[consumer.HeaderDeadLetterReason]; ok {
		dl := DeadLetter{Reason: tableString(reason), Queue: tableString(d.Headers[consumer.HeaderOriginalQueue])}
		dl.Attempts, _ = strconv.Atoi(tableString(d.Headers[consumer.HeaderAttempts]))
		dl.Message = publishingOf(&d)
		dl.Message.Headers = maps.Clone(d.Headers)
		for _, k := range []string{consumer.HeaderDeadLetterReason, consumer.HeaderOriginalQueue, consumer.HeaderAttempts, consumer.HeaderDeadLetterID} {
			delete(dl.Message.Headers, k)
		}
		if len(dl.Message.Headers) == 0 {
			dl.Message.Headers = nil
		}
		return dl, nil
	}
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if death, ok := deaths[0].(amqp.Table); ok {
			dl := DeadLetter{
				Reason:   "dead-lettered by the broker: " + tableString(death["reason"]),
				Queue:    tableString(death["queue"]),
				Exchange: tableString(death["exchange"]),
				Message:  publishingOf(&d),
			}
			dl.Message.Headers = d.Headers
			if keys, ok := death["routing-keys"].([]any); ok && len(keys) > 0 {
				dl.RoutingKey = tableString(keys[0])
			}
			return dl, nil
		}
	}
	return DeadLetter{}, ErrNotDeadLetter
}

func publishingOf(d *amqp.Delivery) amqp.Publishing {
	return amqp.Publishing{
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, UserId: d.UserId, AppId: d.AppId,
		Body: d.Body,
	}
}

// tableString returns a header value as text: a string or byte array as
// it is, anything else as fmt prints it, "" for none.
func tableString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(v)
}

// envelope is the JSON form of an envelope, the body excepted (see the
// package documentation).
type envelope struct {
	Version    int               `json:"version"`
	Queue      string            `json:"queue"`
	Reason     string            `json:"reason"`
	Attempts   int               `json:"attempts"`
	Exchange   string            `json:"exchange,omitempty"`
	RoutingKey string            `json:"routing_key,omitempty"`
	Properties properties        `json:"properties"`
	Base64     map[string]string `json:"base64_strings,omitempty"`
	Headers    []byte            `json:"headers,omitempty"`
	Body       *[]byte           `json:"body,omitempty"` // read only; written by appendEnvelope
}

type properties struct {
	ContentType     string `json:"content_type,omitempty"`
	ContentEncoding string `json:"content_encoding,omitempty"`
	DeliveryMode    uint8  `json:"delivery_mode,omitempty"`
	Priority        uint8  `json:"priority,omitempty"`
	CorrelationID   string `json:"correlation_id,omitempty"`
	ReplyTo         string `json:"reply_to,omitempty"`
	Expiration      string `json:"expiration,omitempty"`
	MessageID       string `json:"message_id,omitempty"`
	Timestamp       *int64 `json:"timestamp,omitempty"`
	Type            string `json:"type,omitempty"`
	UserID          string `json:"user_id,omitempty"`
	AppID           string `json:"app_id,omitempty"`
}

// stringFields lists the envelope's string fields by their JSON names.
func (e *envelope) stringFields() map[string]*string {
	p := &e.Properties
	return map[string]*string{
		"exchange": &e.Exchange, "routing_key": &e.RoutingKey,
		"content_type": &p.ContentType, "content_encoding": &p.ContentEncoding,
		"correlation_id": &p.CorrelationID, "reply_to": &p.ReplyTo, "expiration": &p.Expiration,
		"message_id": &p.MessageID, "type": &p.Type, "user_id": &p.UserID, "app_id": &p.AppID,
	}
}

// appendEnvelope returns the envelope of d: its properties, raw header
// table (nil: none) and body, with the reason, attempts and queue. The
// body is base64-encoded straight into the one buffer returned.
func appendEnvelope(d *amqp.Delivery, rawHeaders []byte, reason string, attempts int, queue string) ([]byte, error) {
	e := envelope{
		Version: EnvelopeVersion, Queue: queue, Reason: reason, Attempts: attempts,
		Exchange: d.Exchange, RoutingKey: d.RoutingKey, Headers: rawHeaders,
		Properties: properties{
			ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
			Priority: d.Priority, CorrelationID: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
			MessageID: d.MessageId, Type: d.Type, UserID: d.UserId, AppID: d.AppId,
		},
	}
	if !d.Timestamp.IsZero() {
		ts := d.Timestamp.Unix()
		e.Properties.Timestamp = &ts
	}
	for name, f := range e.stringFields() {
		if !utf8.ValidString(*f) {
			if e.Base64 == nil {
				e.Base64 = map[string]string{}
			}
			e.Base64[name] = base64.StdEncoding.EncodeToString([]byte(*f))
			*f = ""
		}
	}
	meta, err := json.Marshal(&e)
	if err != nil {
		return nil, err
	}
	const key = `,"body":"`
	out := make([]byte, 0, len(meta)-1+len(key)+base64.StdEncoding.EncodedLen(len(d.Body))+2)
	out = append(out, meta[:len(meta)-1]...) // without the closing brace
	out = append(out, key...)
	out = base64.StdEncoding.AppendEncode(out, d.Body)
	return append(out, '"', '}'), nil
}

func parseEnvelope(body []byte) (DeadLetter, error) {
	var e envelope
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&e); err != nil {
		return DeadLetter{}, fmt.Errorf("rabbitsub: dead-letter envelope: %w", err)
	}
	if e.Version != EnvelopeVersion {
		return DeadLetter{}, fmt.Errorf("rabbitsub: dead-letter envelope version %d, want %d", e.Version, EnvelopeVersion)
	}
	fields := e.stringFields()
	for name, v := range e.Base64 {
		f, ok := fields[name]
		if !ok {
			return DeadLetter{}, fmt.Errorf("rabbitsub: dead-letter envelope: unknown base64 string %q", name)
		}
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return DeadLetter{}, fmt.Errorf("rabbitsub: dead-letter envelope: base64 string %q: %w", name, err)
		}
		*f = string(raw)
	}
	p := e.Properties
	dl := DeadLetter{
		Exchange: e.Exchange, RoutingKey: e.RoutingKey, Reason: e.Reason, Attempts: e.Attempts, Queue: e.Queue,
		Envelope: true, RawHeaders: e.Headers,
		Message: amqp.Publishing{
			ContentType: p.ContentType, ContentEncoding: p.ContentEncoding, DeliveryMode: p.DeliveryMode,
			Priority: p.Priority, CorrelationId: p.CorrelationID, ReplyTo: p.ReplyTo, Expiration: p.Expiration,
			MessageId: p.MessageID, Type: p.Type, UserId: p.UserID, AppId: p.AppID,
		},
	}
	if p.Timestamp != nil {
		dl.Message.Timestamp = time.Unix(*p.Timestamp, 0)
	}
	if e.Body != nil {
		dl.Message.Body = *e.Body
	}
	if len(e.Headers) > 0 {
		t, err := decodeTable(e.Headers, envelopeLimits())
		if err != nil {
			return dl, fmt.Errorf("rabbitsub: dead-letter envelope: headers: %w", err)
		}
		dl.Message.Headers = t
	}
	return dl, nil
}

// deadLetters publishes a session's dead letters on a confirm-mode channel
// of its connection, opened again when the broker closed it. Safe for
// concurrent use.
type deadLetters struct {
	conn          *amqp.Connection
	exchange, key string
	frameMax      int
	returnsBuffer int

	mu      sync.Mutex
	ch      *amqp.Channel
	returns <-chan amqp.Return

	retMu    sync.Mutex
	returned map[string]bool // consumer.HeaderDeadLetterID values returned and not yet checked
}

// channel returns the confirm-mode channel, opening one if there is none
// or the broker closed it.
func (dl *deadLetters) channel() (*amqp.Channel, <-chan amqp.Return, error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.ch != nil && !dl.ch.IsClosed() {
		return dl.ch, dl.returns, nil
	}
	ch, err := dl.conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open dead-letter channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("dead-letter confirm mode: %w", err)
	}
	dl.ch, dl.returns = ch, ch.NotifyReturn(make(chan amqp.Return, dl.returnsBuffer))
	return dl.ch, dl.returns, nil
}

// close closes the channel, if one is open.
func (dl *deadLetters) close() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.ch != nil {
		_ = dl.ch.Close()
	}
}

// publish publishes pub (whose consumer.HeaderDeadLetterID is id) and
// waits for the broker's confirm.
func (dl *deadLetters) publish(ctx context.Context, pub *amqp.Publishing, id string) error {
	ch, returns, err := dl.channel()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	defer dl.drain(returns)
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, dl.exchange, dl.key, true, false, *pub)
	if err != nil {
		return err
	}
	ok, err := conf.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("broker nacked the dead letter")
	}
	if dl.wasReturned(returns, id) {
		return fmt.Errorf("%w: exchange %q routes key %q to no queue", ErrDeadLetterUnroutable, dl.exchange, dl.key)
	}
	return nil
}

// wasReturned reports whether the publication with the given dead-letter ID
// came back as unroutable. The broker sends basic.return before the
// basic.ack of the same message, and the client hands the return to the
// returns channel before it resolves the confirm, so once the confirm is in,
// a return for it is already buffered there.
func (dl *deadLetters) wasReturned(returns <-chan amqp.Return, id string) bool {
	dl.drain(returns)
	dl.retMu.Lock()
	defer dl.retMu.Unlock()
	if dl.returned[id] {
		delete(dl.returned, id)
		return true
	}
	return false
}

// drain moves the buffered returns into the returned set, so that the
// client never blocks on a full returns channel.
func (dl *deadLetters) drain(returns <-chan amqp.Return) {
	dl.retMu.Lock()
	defer dl.retMu.Unlock()
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				return
			}
			if v, ok := r.Headers[consumer.HeaderDeadLetterID].(string); ok {
				if dl.returned == nil {
					dl.returned = map[string]bool{}
				}
				dl.returned[v] = true
			}
		default:
			return
		}
	}
}

// ErrDeadLetterUnroutable: the broker returned a dead letter because its
// exchange routed it to no queue; the original message is not acked.
var ErrDeadLetterUnroutable = errors.New("rabbitsub: dead letter unroutable")

// deadLetter returns the publication that stores d in the dead letter: a
// plain copy with the reason headers when it can be one, an envelope
// otherwise (rawHeaders non-nil: the client could not read d's headers;
// they are these bytes).
func (c *Consumer) deadLetter(d *amqp.Delivery, rawHeaders []byte, reason string, attempts, frameMax int) (amqp.Publishing, string, error) {
	id := uuid.NewString()
	if rawHeaders == nil && d.UserId == "" {
		headers := make(amqp.Table, len(d.Headers)+4)
		maps.Copy(headers, d.Headers)
		headers[consumer.HeaderDeadLetterReason] = reason
		headers[consumer.HeaderOriginalQueue] = c.queue
		headers[consumer.HeaderAttempts] = strconv.Itoa(attempts)
		headers[consumer.HeaderDeadLetterID] = id
		pub := amqp.Publishing{
			Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
			DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
			ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
			AppId: d.AppId, Body: d.Body,
		}
		if size, err := rabbitmq.HeaderFrameSize(&pub); err == nil && size <= frameMax {
			return pub, id, nil
		}
	}
	if rawHeaders == nil && len(d.Headers) > 0 {
		var err error
		if rawHeaders, err = appendTable(nil, d.Headers); err != nil {
			return amqp.Publishing{}, "", fmt.Errorf("rabbitsub: dead-letter envelope: %w", err)
		}
	}
	body, err := appendEnvelope(d, rawHeaders, reason, attempts, c.queue)
	if err != nil {
		return amqp.Publishing{}, "", fmt.Errorf("rabbitsub: dead-letter envelope: %w", err)
	}
	pub := amqp.Publishing{
		Headers: amqp.Table{
			consumer.HeaderDeadLetterReason: reason,
			consumer.HeaderOriginalQueue:    c.queue,
			consumer.HeaderAttempts:         strconv.Itoa(attempts),
			consumer.HeaderDeadLetterID:     id,
		},
		ContentType: EnvelopeContentType, DeliveryMode: amqp.Persistent, Priority: d.Priority,
		CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		AppId: d.AppId, Body: body,
	}
	// The envelope holds the whole reason; the header gets what fits.
	if size, err := rabbitmq.HeaderFrameSize(&pub); err == nil && size > frameMax {
		pub.Headers[consumer.HeaderDeadLetterReason] = consumer.TruncateReason(reason, len(reason)-(size-frameMax))
	}
	return pub, id, nil
}
