package rabbitmq

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultFrameMax is RabbitMQ's default frame_max, the largest frame a
// connection carries unless the broker negotiates another size
// (amqp.Connection.Config.FrameSize after the dial).
const DefaultFrameMax = 131072

// frameOverhead is a frame's type, channel and size fields and its end
// byte; the content header's fixed fields are class, weight, body size and
// property flags.
const (
	frameOverhead       = 1 + 2 + 4 + 1
	contentHeaderFields = 2 + 2 + 8 + 2
)

// HeaderFrameSize returns the size in bytes of the content-header frame
// that carries p's properties and headers, framing included. The frame
// cannot be split, so a publishing whose header frame exceeds the
// connection's frame_max makes the broker close the connection
// (FRAME_ERROR): check it before sending. (RabbitMQ itself compares the
// frame's payload, 8 bytes less, with frame_max; keeping the whole frame
// within frame_max, as the AMQP specification says, leaves that margin.)
// It fails for a header value of a type AMQP tables cannot carry.
func HeaderFrameSize(p *amqp.Publishing) (int, error) {
	n := frameOverhead + contentHeaderFields
	for _, s := range []string{p.ContentType, p.ContentEncoding, p.CorrelationId, p.ReplyTo, p.Expiration, p.MessageId, p.Type, p.UserId, p.AppId} {
		if s != "" {
			n += 1 + len(s)
		}
	}
	if len(p.Headers) > 0 {
		ts, err := TableSize(p.Headers)
		if err != nil {
			return 0, err
		}
		n += ts
	}
	if p.DeliveryMode > 0 {
		n++
	}
	if p.Priority > 0 {
		n++
	}
	if !p.Timestamp.IsZero() {
		n += 8
	}
	return n, nil
}

// TableSize returns the encoded size of an AMQP field table, its 4-byte
// length included.
func TableSize(t amqp.Table) (int, error) {
	n := 4
	for k, v := range t {
		fs, err := FieldSize(v)
		if err != nil {
			return 0, fmt.Errorf("rabbitmq: header %q: %w", k, err)
		}
		n += 1 + len(k) + fs
	}
	return n, nil
}

// FieldSize returns the encoded size of one table value, its type byte
// included, as amqp091-go writes it.
func FieldSize(v any) (int, error) {
	switch v := v.(type) {
	case nil:
		return 1, nil
	case bool, byte, int8:
		return 2, nil
	case int16, uint16:
		return 3, nil
	case int, int32, uint32, float32:
		return 5, nil
	case int64, float64, time.Time:
		return 9, nil
	case amqp.Decimal:
		return 6, nil
	case string:
		return 5 + len(v), nil
	case []byte:
		return 5 + len(v), nil
	case []any:
		n := 5
		for _, e := range v {
			fs, err := FieldSize(e)
			if err != nil {
				return 0, err
			}
			n += fs
		}
		return n, nil
	case amqp.Table:
		ts, err := TableSize(v)
		return 1 + ts, err
	}
	return 0, fmt.Errorf("type %T cannot be encoded in an AMQP table", v)
}

// FrameMax returns the frame size negotiated on conn, or [DefaultFrameMax]
// when none was (a broker that does not limit frames).
func FrameMax(conn *amqp.Connection) int {
	if conn != nil && conn.Config.FrameSize > 0 {
		return conn.Config.FrameSize
	}
	return DefaultFrameMax
}
