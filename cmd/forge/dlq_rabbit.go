package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// headerDeliveryCount is the header a quorum queue adds to a message it
// delivers again.
const headerDeliveryCount = "x-delivery-count"

// brokerHeaders are the headers RabbitMQ adds when it dead-letters a
// message or delivers it again; redrive strips them.
var brokerHeaders = []string{"x-death", "x-first-death-queue", "x-first-death-reason", "x-first-death-exchange",
	"x-last-death-queue", "x-last-death-reason", "x-last-death-exchange", headerDeliveryCount}

// rabbitSource reads a RabbitMQ dead-letter queue with basic.get on a
// guarded connection, without acknowledging: what it read goes back to the
// queue, in order, when the scan ends, unless redrive removed it.
type rabbitSource struct {
	where    string
	queue    string
	user     string // the connection's user, the only user-id RabbitMQ accepts from it
	guard    rabbitsub.Guard
	conn     *amqp.Connection
	get      *amqp.Channel
	frameMax int
	last     uint64 // the delivery tag of the last message read

	pub       *amqp.Channel
	returns   chan amqp.Return
	pubClosed chan *amqp.Error

	deliveryCount int // the highest x-delivery-count read; -1: none (not a quorum queue)
	requeueErr    error
}

// rabbitState is what redrive needs of a RabbitMQ dead letter.
type rabbitState struct {
	tag uint64
	pub amqp.Publishing
}

// openRabbit connects to the broker at rawURL (where is its redacted form)
// and opens the dead-letter queue name, or name+".dead-letter".
func openRabbit(ctx context.Context, rawURL, where, name string, stderr io.Writer) (*rabbitSource, error) {
	ends, err := rabbitmq.NewEndpoints([]string{rawURL}, amqp.Config{Properties: amqp.Table{"connection_name": "forge dlq"}})
	if err != nil {
		return nil, err
	}
	s := &rabbitSource{deliveryCount: -1}
	ends.SetDialFunc(s.guard.Dial)
	conn, _, err := ends.Dial(ctx)
	if err != nil {
		return nil, err
	}
	s.conn, s.frameMax = conn, rabbitmq.FrameMax(conn)
	if uri, err := amqp.ParseURI(rawURL); err == nil {
		s.user = uri.Username
	}
	candidates := []string{name}
	if !strings.HasSuffix(name, consumer.DeadLetterSuffix) {
		candidates = []string{name + consumer.DeadLetterSuffix, name}
	}
	for i, q := range candidates {
		ch, err := conn.Channel()
		if err != nil {
			s.close()
			return nil, errorf("%s: open channel: %w", where, err)
		}
		_, err = ch.QueueDeclarePassive(q, false, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			continue // the broker closed the channel
		}
		if err != nil {
			s.close()
			return nil, errorf("%s: queue %s: %w", where, q, rabbitmq.Classify(err))
		}
		if i > 0 {
			fmt.Fprintf(stderr, "forge: no queue %s: reading %s itself\n", candidates[0], q)
		}
		s.get, s.queue = ch, q
		break
	}
	if s.get == nil {
		s.close()
		return nil, errorf("%s: no queue %s", where, strings.Join(candidates, " or "))
	}
	s.where = fmt.Sprintf("queue %s at %s", s.queue, where)
	return s, nil
}

func (s *rabbitSource) describe() string { return s.where }

func (s *rabbitSource) close() {
	if s.conn != nil {
		s.guard.Release(s.conn)
	}
}

// scan reads the queue until it is empty (what others publish meanwhile
// is read too; --timeout bounds it), and requeues what it read and did not
// redrive. (The message count of a quorum queue lags behind messages just
// requeued by an earlier command, so it cannot bound the scan.)
func (s *rabbitSource) scan(ctx context.Context, visit func(*dlqEntry) (bool, error)) error {
	defer s.requeue()
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok, err := s.get.Get(s.queue, false)
		if err != nil {
			return errorf("%s: basic.get: %w", s.where, err)
		}
		if !ok {
			return nil
		}
		s.last = d.DeliveryTag
		more, err := visit(s.entry(i+1, &d))
		if err != nil || !more {
			return err
		}
	}
}

// requeue returns every message read and not removed to the queue, in
// order (a classic queue puts each back at its place; a quorum queue
// delivers returned messages first, in the order returned).
func (s *rabbitSource) requeue() {
	if s.last == 0 {
		return
	}
	if err := s.get.Nack(s.last, true, true); err != nil {
		// The broker requeues them when the connection closes.
		s.requeueErr = err
	}
	s.last = 0
}

func (s *rabbitSource) warn(stderr io.Writer) {
	if s.deliveryCount >= 0 {
		fmt.Fprintf(stderr, "forge: warning: %s is a quorum queue: reading a message counts as a delivery "+
			"(the highest %s is now %d); a delivery limit on the queue (x-delivery-limit, or a policy) "+
			"drops or dead-letters a dead letter read that often\n", s.queue, headerDeliveryCount, s.deliveryCount+1)
	}
	if s.requeueErr != nil {
		fmt.Fprintf(stderr, "forge: warning: %s: requeueing what was read: %v (the broker requeues it as the connection closes)\n", s.where, s.requeueErr)
	}
}

// entry describes the delivery d, the pos-th message of the queue.
func (s *rabbitSource) entry(pos int, d *amqp.Delivery) *dlqEntry {
	raw, why, unreadable := s.guard.Unreadable(s.conn, d)
	if unreadable {
		if t, err := rabbitsub.DecodeHeaders(raw); err == nil {
			d.Headers = t
		}
	}
	if n, ok := intValue(d.Headers[headerDeliveryCount]); ok && n > s.deliveryCount {
		s.deliveryCount = n
	}
	e := &dlqEntry{Pos: strconv.Itoa(pos)}
	dl, err := rabbitsub.ParseDeadLetter(*d)
	switch {
	case errors.Is(err, rabbitsub.ErrNotDeadLetter):
		e.Form = "not a dead letter"
		e.Problem = "not a dead letter: it has neither the " + consumer.HeaderDeadLetterReason + " nor the x-death header"
		dl.Message = amqp.Publishing{Headers: d.Headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
			DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
			Expiration: d.Expiration, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, UserId: d.UserId,
			AppId: d.AppId, Body: d.Body}
	case err != nil && !dl.Envelope: // the envelope itself does not parse
		e.Form = "envelope"
		e.Problem = strings.TrimPrefix(err.Error(), "rabbitsub: ")
		dl.Message = amqp.Publishing{MessageId: d.MessageId, CorrelationId: d.CorrelationId, Type: d.Type}
		dl.Reason, dl.Queue = headerText(d.Headers, consumer.HeaderDeadLetterReason), headerText(d.Headers, consumer.HeaderOriginalQueue)
	case err != nil:
		e.Problem = strings.TrimPrefix(err.Error(), "rabbitsub: ")
	}
	if e.Form == "" {
		switch _, reason := d.Headers[consumer.HeaderDeadLetterReason]; {
		case dl.Envelope:
			e.Form = "envelope"
		case reason:
			e.Form = "plain"
		default:
			e.Form = "broker"
			e.Exchange, e.RoutingKey = &dl.Exchange, &dl.RoutingKey
		}
		if dl.Envelope {
			e.Exchange, e.RoutingKey = &dl.Exchange, &dl.RoutingKey
		}
	}
	pub := dl.Message
	pub.Headers = maps.Clone(pub.Headers)
	for _, k := range brokerHeaders {
		if k == headerDeliveryCount || e.Form == "broker" {
			delete(pub.Headers, k)
		}
	}
	if len(pub.Headers) == 0 {
		pub.Headers = nil
	}
	e.MessageID, e.CorrelationID, e.Type = pub.MessageId, pub.CorrelationId, pub.Type
	e.CausationID = headerText(pub.Headers, lineage.HeaderCausationID)
	e.Reason, e.Attempts, e.Queue = dl.Reason, dl.Attempts, dl.Queue
	e.Properties, e.Headers, e.Body = amqpProperties(&pub), amqpHeaders(pub.Headers), pub.Body
	e.state = &rabbitState{tag: d.DeliveryTag, pub: pub}
	if e.Problem == "" || unreadable {
		e.Problem = s.problem(e, &pub, dl.RawHeaders, unreadable, why)
	}
	return e
}

// problem says why the original pub of e cannot be republished, or "".
func (s *rabbitSource) problem(e *dlqEntry, pub *amqp.Publishing, rawHeaders []byte, unreadable bool, why string) string {
	poison := func(why string) string {
		return fmt.Sprintf("its headers are unreadable by the AMQP client (%s): republished, the message would make "+
			"every consumer of %s using that client close its connection on it", why, orDash(e.Queue))
	}
	if unreadable {
		return poison(why)
	}
	if rawHeaders != nil {
		if err := rabbitsub.CheckHeaders(rawHeaders); err != nil {
			return poison(strings.TrimPrefix(err.Error(), rabbitsub.ErrUnreadableHeaders.Error()+": "))
		}
	}
	if e.Queue == "" {
		return "the original queue is not known"
	}
	size, err := rabbitmq.HeaderFrameSize(pub)
	if err != nil {
		return err.Error()
	}
	if size > s.frameMax {
		return poison(fmt.Sprintf("its properties and headers take %d bytes, more than the frame_max of %d", size, s.frameMax))
	}
	if pub.UserId != "" && pub.UserId != s.user {
		return fmt.Sprintf("its user-id property is %q: RabbitMQ accepts it only on a connection of that user (this one's user is %q)", pub.UserId, s.user)
	}
	return ""
}

func (s *rabbitSource) complete(context.Context, *dlqEntry) error { return nil }

func (s *rabbitSource) redrive(ctx context.Context, e *dlqEntry, viaExchange bool) (string, error) {
	st := e.state.(*rabbitState)
	exchange, key := "", e.Queue
	if viaExchange {
		exchange, key = deref(e.Exchange), deref(e.RoutingKey)
	}
	if err := s.publish(ctx, exchange, key, st.pub); err != nil {
		return "", err
	}
	if err := s.get.Ack(st.tag, false); err != nil {
		return "", fatalError{errorf("republished, but the dead letter was not removed (%w): it goes back to the queue, "+
			"and redriving it again publishes the message again, with the same message ID", err)}
	}
	return redriveTarget(e, viaExchange), nil
}

// publish publishes pub as mandatory on a confirm-mode channel and waits
// for the broker's confirm; a message returned as unroutable is an error.
func (s *rabbitSource) publish(ctx context.Context, exchange, key string, pub amqp.Publishing) error {
	if s.pub == nil || s.pub.IsClosed() {
		if s.conn.IsClosed() {
			return fatalError{errors.New("the connection closed")}
		}
		ch, err := s.conn.Channel()
		if err != nil {
			return fatalError{fmt.Errorf("open channel: %w", err)}
		}
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return fatalError{fmt.Errorf("confirm mode: %w", err)}
		}
		s.pub, s.returns, s.pubClosed = ch, ch.NotifyReturn(make(chan amqp.Return, 1)), ch.NotifyClose(make(chan *amqp.Error, 1))
	}
	conf, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, pub)
	if err != nil {
		return s.pubError(err)
	}
	ok, err := conf.WaitContext(ctx)
	if err != nil {
		return err
	}
	select {
	case r := <-s.returns:
		if exchange == "" {
			return fmt.Errorf("unroutable: there is no queue %s (%d %s)", key, r.ReplyCode, r.ReplyText)
		}
		return fmt.Errorf("unroutable: exchange %s routes %q to no queue (%d %s)", exchange, key, r.ReplyCode, r.ReplyText)
	default:
	}
	if !ok {
		return s.pubError(errors.New("the broker did not confirm it"))
	}
	return nil
}

// pubError adds why the broker closed the publishing channel, if it did.
func (s *rabbitSource) pubError(err error) error {
	select {
	case cause, ok := <-s.pubClosed:
		if ok && cause != nil {
			err = fmt.Errorf("the broker refused it: %s", cause.Reason)
		}
	default:
	}
	if s.conn.IsClosed() {
		return fatalError{err}
	}
	return err
}

func intValue(v any) (int, bool) {
	switch v := v.(type) {
	case int64:
		return int(v), true
	case int32:
		return int(v), true
	case int:
		return v, true
	case int16:
		return int(v), true
	case uint16:
		return int(v), true
	case uint32:
		return int(v), true
	case int8:
		return int(v), true
	case uint8:
		return int(v), true
	}
	return 0, false
}

func headerText(t amqp.Table, k string) string {
	switch v := t[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// amqpProperties lists the properties set on p.
func amqpProperties(p *amqp.Publishing) []dlqField {
	var out []dlqField
	str := func(name, v string) {
		if v != "" {
			out = append(out, dlqField{Name: name, Text: amqpText(v), JSON: amqpJSON(v)})
		}
	}
	num := func(name string, v uint8, note string) {
		if v != 0 {
			out = append(out, dlqField{Name: name, Text: strconv.Itoa(int(v)) + note, JSON: v})
		}
	}
	str("content-type", p.ContentType)
	str("content-encoding", p.ContentEncoding)
	mode := ""
	switch p.DeliveryMode {
	case amqp.Transient:
		mode = " (transient)"
	case amqp.Persistent:
		mode = " (persistent)"
	}
	num("delivery-mode", p.DeliveryMode, mode)
	num("priority", p.Priority, "")
	str("correlation-id", p.CorrelationId)
	str("reply-to", p.ReplyTo)
	str("expiration", p.Expiration)
	str("message-id", p.MessageId)
	if !p.Timestamp.IsZero() {
		ts := p.Timestamp.UTC().Format(time.RFC3339)
		out = append(out, dlqField{Name: "timestamp", Text: ts, JSON: ts})
	}
	str("type", p.Type)
	str("user-id", p.UserId)
	str("app-id", p.AppId)
	return out
}

// amqpHeaders lists the headers of t, by name.
func amqpHeaders(t amqp.Table) []dlqField {
	keys := slices.Sorted(maps.Keys(t))
	out := make([]dlqField, len(keys))
	for i, k := range keys {
		out[i] = dlqField{Name: k, Text: amqpText(t[k]), JSON: amqpJSON(t[k])}
	}
	return out
}

// maxText bounds the text of one value.
const maxText = 200

// amqpText formats a table value for people, cut to about maxText bytes.
func amqpText(v any) string {
	var b strings.Builder
	writeAMQPText(&b, v, 0)
	s := b.String()
	if len(s) > maxText {
		cut := maxText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func writeAMQPText(b *strings.Builder, v any, depth int) {
	if b.Len() > maxText {
		return
	}
	if depth > 8 {
		b.WriteString("…")
		return
	}
	switch v := v.(type) {
	case string:
		b.WriteString(quoteBytes([]byte(v), maxText))
	case []byte:
		b.WriteString("bytes " + quoteBytes(v, maxText))
	case time.Time:
		b.WriteString(v.UTC().Format(time.RFC3339))
	case nil:
		b.WriteString("null")
	case amqp.Table:
		b.WriteString("{")
		for i, k := range slices.Sorted(maps.Keys(v)) {
			if b.Len() > maxText {
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(k + ": ")
			writeAMQPText(b, v[k], depth+1)
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[")
		for i, e := range v {
			if b.Len() > maxText {
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			writeAMQPText(b, e, depth+1)
		}
		b.WriteString("]")
	case amqp.Decimal:
		fmt.Fprintf(b, "decimal %d scale %d", v.Value, v.Scale)
	case bool:
		fmt.Fprint(b, v)
	default:
		fmt.Fprintf(b, "%v (%T)", v, v)
	}
}

// amqpJSON converts a table value to a JSON value: strings that are not
// UTF-8 and byte arrays become {"base64": ...}, timestamps RFC 3339
// strings, decimals {"scale", "value"}.
func amqpJSON(v any) any {
	switch v := v.(type) {
	case string:
		if utf8.ValidString(v) {
			return v
		}
		return map[string]string{"base64": base64.StdEncoding.EncodeToString([]byte(v))}
	case []byte:
		return map[string]string{"base64": base64.StdEncoding.EncodeToString(v)}
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case amqp.Decimal:
		return map[string]any{"scale": v.Scale, "value": v.Value}
	case amqp.Table:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = amqpJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = amqpJSON(e)
		}
		return out
	case float32:
		return jsonFloat(float64(v))
	case float64:
		return jsonFloat(v)
	}
	return v
}

// jsonFloat keeps what JSON cannot hold (NaN, infinities) as a string.
func jsonFloat(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}
