package rabbitsub

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/rabbitmq"
)

// What tools that list, show and redrive dead letters need besides
// ParseDeadLetter: a connection that survives reading a message whose
// headers amqp091-go cannot read (a dead-letter queue holds one when a
// quorum queue's delivery limit moved it there), and the table checks that
// keep such headers from being published again.

// ErrUnreadableHeaders is returned by [CheckHeaders] for a header table that
// amqp091-go cannot read: publishing it again would make every consumer
// using that client close its connection on it.
var ErrUnreadableHeaders = errors.New("rabbitsub: headers unreadable by the AMQP client")

// Guard dials connections protected as a [Consumer]'s are (see "Messages
// the AMQP client cannot read" in the package documentation): a delivery
// whose header table amqp091-go cannot read, whether consumed or fetched
// with basic.get, arrives without its headers instead of closing the
// connection, and [Guard.Unreadable] returns the table as received. It is
// for tools that read queues which may hold such messages. A zero Guard is
// ready to use; it is safe for concurrent use and must not be copied after
// first use.
type Guard struct {
	// c keeps the guard of each connection dialled; nothing else of the
	// Consumer is used.
	c Consumer
}

// Dial connects to url (amqp:// or amqps://) with cfg as amqp.DialConfig
// does, with the guard between the socket and the client. Its signature is
// the one [rabbitmq.Endpoints.SetDialFunc] takes. Errors never contain the
// password and wrap the client's (an *amqp.Error for a refusal, which
// [rabbitmq.Classify] recognises). Call [Guard.Release] instead of closing
// the connection.
func (g *Guard) Dial(url string, cfg amqp.Config) (*amqp.Connection, error) {
	if err := rabbitmq.ParseURL(url); err != nil {
		return nil, fmt.Errorf("rabbitsub: %w", err)
	}
	conn, err := g.c.dialGuarded(url, cfg)
	if err != nil {
		return nil, fmt.Errorf("rabbitsub: connect: %w", err)
	}
	return conn, nil
}

// Unreadable reports whether the guard took the header table out of d, a
// delivery of conn, because amqp091-go cannot read it. If so, it clears
// d.Headers (which held only a placeholder) and returns the table exactly
// as received (AMQP 0-9-1 field-table encoding, its 4-byte length first)
// and why the client cannot read it. Each table is returned once.
func (g *Guard) Unreadable(conn *amqp.Connection, d *amqp.Delivery) (raw []byte, reason string, ok bool) {
	u, ok := g.c.guard(conn).take(d)
	if !ok {
		return nil, "", false
	}
	d.Headers = nil
	return u.raw, u.reason, true
}

// Release closes conn, a connection of [Guard.Dial], and forgets its guard.
func (g *Guard) Release(conn *amqp.Connection) { g.c.release(conn) }

// DecodeHeaders decodes raw, a header table as [Guard.Unreadable] or an
// envelope's [DeadLetter.RawHeaders] holds it, without amqp091-go's limits
// (nesting is bounded at 4096 levels, as [ParseDeadLetter] bounds it), so
// that a tool can show headers the client cannot read. It does not say
// whether the client could read them: see [CheckHeaders].
func DecodeHeaders(raw []byte) (amqp.Table, error) {
	t, err := decodeTable(raw, envelopeLimits())
	if err != nil {
		return nil, fmt.Errorf("rabbitsub: headers: %w", err)
	}
	return t, nil
}

// CheckHeaders returns nil when amqp091-go reads raw, a header table in
// AMQP 0-9-1 field-table encoding (4-byte length first), and otherwise an
// error wrapping [ErrUnreadableHeaders] that says why (too many entries,
// nested too deep, a field type the client does not know, truncated). It
// does not check the size of the content header the table would go in:
// compare [rabbitmq.HeaderFrameSize] with the connection's frame_max.
func CheckHeaders(raw []byte) error {
	if _, err := decodeTable(raw, clientLimits()); err != nil {
		return fmt.Errorf("%w: %v", ErrUnreadableHeaders, err)
	}
	return nil
}
