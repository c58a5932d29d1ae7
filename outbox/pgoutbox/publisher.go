package pgoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// DefaultMaxBodySize is the largest body a [Publisher] accepts unless
// publisher.WithMaxBodySize says otherwise: RabbitMQ's default limit. Set
// the limit of the destination's broker (Kafka: about 1 MB) so that an
// oversized body is refused at enqueue, in the caller's transaction, rather
// than dying at the relay.
const DefaultMaxBodySize = 16 << 20

// maxRoutingKey is AMQP's limit on a routing key.
const maxRoutingKey = 255

var _ publisher.Publisher = (*Publisher)(nil)

type txKey struct{}

// NewContext returns a copy of ctx carrying tx: a [Publisher] given the
// returned context writes into tx, so the messages are stored if and only if
// tx commits. Handlers run by the PostgreSQL inbox (dedupe/pgstore) need no
// NewContext: the inbox's transaction is in their context already.
func NewContext(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFromContext returns the transaction a [Publisher] writes into: the one
// given to [NewContext], or else the inbox transaction of dedupe/pgstore
// ([pgstore.TxFromContext]).
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok && tx != nil {
		return tx, true
	}
	return pgstore.TxFromContext(ctx)
}

type pubConfig struct {
	routingKey func(*publisher.Message) string
	ownTx      bool
}

// WithRoutingKey computes, at enqueue time, the RabbitMQ routing key stored
// with each message that has no Message.RoutingKey of its own. Default:
// none is stored, and the relay's publisher computes it (by default from
// the type). Use it when the routing key depends on the business key: the
// relay's publisher sees the key only in its wire form. Do not use it for a
// Kafka destination, whose publisher rejects routing keys.
func WithRoutingKey(f func(*publisher.Message) string) publisher.Option {
	return publisher.TransportOption("pgoutbox.WithRoutingKey", func(c *pubConfig) error {
		if f == nil {
			return errors.New("nil routing key function")
		}
		c.routingKey = f
		return nil
	})
}

// WithOwnTransaction lets a [Publisher] called without a transaction in its
// context store the messages in a transaction of its own, committed before
// Publish returns: they are then stored whatever becomes of the caller's
// other writes, and the relay publishes them even if the broker is down
// now. Default: such a call fails with [ErrNoTransaction], because a
// missing transaction usually means a handler that is not running where
// its author thought.
func WithOwnTransaction() publisher.Option {
	return publisher.TransportOption("pgoutbox.WithOwnTransaction", func(c *pubConfig) error {
		c.ownTx = true
		return nil
	})
}

// Publisher is a [publisher.Publisher] that writes messages into the outbox
// for one destination, inside the transaction found in the context
// ([TxFromContext]); a relay ([outbox.Relay]) publishes them after the
// commit. Give it to code in place of a broker publisher: the code does not
// change, only whether its messages leave with its transaction.
//
// Messages are stamped exactly as the broker publishers stamp them
// ([publisher.Stamp], with the lineage of the message being handled when
// the context carries one), so the stored ID is the ID consumers will see.
// A message whose ID the destination already holds is not stored again.
//
// Of the shared options, publisher.WithMaxBodySize (default
// [DefaultMaxBodySize]) and publisher.WithObserver apply; WithBackoff has no
// effect (an enqueue is one statement, not retried). A Publisher is safe for
// concurrent use, but a transaction is not: do not publish into one
// transaction from several goroutines at once.
type Publisher struct {
	store *Store
	dest  string
	gen   *forge.Generator
	cfg   pubConfig
	set   publisher.Settings
}

// NewPublisher returns a publisher that enqueues into store for
// destination (see [outbox.ValidateDestination]), deriving IDs with gen —
// the generator the service's broker publishers use. It does no I/O.
func NewPublisher(store *Store, destination string, gen *forge.Generator, opts ...publisher.Option) (*Publisher, error) {
	switch {
	case store == nil:
		return nil, errors.New("pgoutbox: nil store")
	case gen == nil:
		return nil, errors.New("pgoutbox: nil generator")
	}
	if err := outbox.ValidateDestination(destination); err != nil {
		return nil, errorf("%w", err)
	}
	var cfg pubConfig
	set, err := publisher.Apply("pgoutbox", &cfg, opts)
	if err != nil {
		return nil, err
	}
	if set.MaxBodySize == 0 {
		set.MaxBodySize = DefaultMaxBodySize
	}
	return &Publisher{store: store, dest: destination, gen: gen, cfg: cfg, set: set}, nil
}

// Destination returns the destination the publisher enqueues for.
func (p *Publisher) Destination() string { return p.dest }

// Publish stamps msg and stores it in the outbox inside the context's
// transaction; see [Publisher.PublishBatch].
func (p *Publisher) Publish(ctx context.Context, msg publisher.Message) error {
	return p.enqueue(ctx, false, msg)
}

// PublishBatch stamps msgs and stores them, in order, with one statement
// inside the context's transaction ([TxFromContext]); it returns once the
// statement ran, and the messages exist once that transaction commits. If
// any message is invalid nothing is stored and the error wraps
// [publisher.ErrInvalid]; besides [publisher.Validate]'s rules, PostgreSQL
// text cannot hold NUL, so a type, header or routing key containing one is
// invalid. Without a transaction in ctx it returns [ErrNoTransaction], or
// uses a transaction of its own with [WithOwnTransaction]. A statement that
// fails inside the caller's transaction aborts it: the caller must roll
// back. An invalid message's error names its index ("pgoutbox: batch
// message 2: ...").
func (p *Publisher) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	return p.enqueue(ctx, true, msgs...)
}

// enqueue is Publish (batch false) and PublishBatch.
func (p *Publisher) enqueue(ctx context.Context, batch bool, msgs ...publisher.Message) (err error) {
	if len(msgs) == 0 {
		return nil
	}
	n := len(msgs)
	// Every observation started ends, also when a later message of the
	// batch turns out invalid and nothing is stored.
	var pubs []*publisher.Publication
	var pctxs []context.Context
	defer func() {
		for i, pub := range pubs {
			p.set.Observer.PublishDone(pctxs[i], pub, err)
		}
	}()
	var (
		ids, corrs, causes = make([]pgtype.UUID, n), make([]pgtype.UUID, n), make([]pgtype.UUID, n)
		types              = make([]string, n)
		keys               = make([][]byte, n)
		rks, hdrs          = make([]pgtype.Text, n), make([]pgtype.Text, n)
		bodies             = make([][]byte, n)
	)
	obs := p.set.Observer
	start := time.Now()
	// which names message i in an error of a batch.
	which := func(i int) string {
		if !batch {
			return ""
		}
		return fmt.Sprintf("batch message %d: ", i)
	}
	for i := range msgs {
		m := msgs[i]
		l, err := publisher.Stamp(ctx, p.gen, &m, p.set.MaxBodySize)
		if err != nil {
			return errorf("%s%w", which(i), err)
		}
		key, err := publisher.KeyBytes(m.Key)
		if err != nil {
			return errorf("%s%w", which(i), publisher.Invalid(m.Type, "key: %v", err))
		}
		rk := m.RoutingKey
		if rk == "" && p.cfg.routingKey != nil {
			rk = p.cfg.routingKey(&m)
		}
		if err := checkText(&m, rk); err != nil {
			return errorf("%s%w", which(i), err)
		}
		headers := m.Headers
		if obs != nil {
			headers = cloneHeaders(m.Headers)
			pub := publisher.NewPublication(func(name, value string) {
				if utf8.ValidString(name) && utf8.ValidString(value) && !strings.ContainsRune(name+value, 0) {
					headers[name] = value
				}
			})
			pub.System, pub.Destination, pub.RoutingKey, pub.Key = "outbox", p.dest, rk, key
			pub.Lineage, pub.BodySize, pub.Batch, pub.Start, pub.Attempts = l, len(m.Body), n, start, 1
			pubs = append(pubs, pub)
			pctxs = append(pctxs, obs.PublishStart(ctx, pub))
		}
		ids[i] = pgtype.UUID{Bytes: l.MessageID, Valid: true}
		corrs[i] = pgtype.UUID{Bytes: l.CorrelationID, Valid: true}
		causes[i] = pgtype.UUID{Bytes: l.CausationID, Valid: l.CausationID != uuid.Nil}
		types[i], keys[i] = m.Type, key
		rks[i] = pgtype.Text{String: rk, Valid: rk != ""}
		if len(headers) > 0 {
			b, err := json.Marshal(headers)
			if err != nil {
				return errorf("%sheaders: %w", which(i), err)
			}
			hdrs[i] = pgtype.Text{String: string(b), Valid: true}
		}
		if m.Body == nil {
			m.Body = []byte{}
		}
		bodies[i] = m.Body
	}
	if err := p.insert(ctx, ids, corrs, causes, types, keys, rks, hdrs, bodies); err != nil {
		return errorf("enqueue %d message(s) for %q: %w", n, p.dest, err)
	}
	return nil
}

func (p *Publisher) insert(ctx context.Context, args ...any) error {
	sql := p.store.sql.enqueue
	all := append([]any{p.dest}, args...)
	if p.store.cfg.notify {
		sql = p.store.sql.enqueueNotify
		all = append(all, p.store.names.channel)
	}
	if tx, ok := TxFromContext(ctx); ok {
		_, err := tx.Exec(ctx, sql, all...)
		return err
	}
	if !p.cfg.ownTx {
		return ErrNoTransaction
	}
	_, err := p.store.pool.Exec(ctx, sql, all...)
	return err
}

// checkText rejects what PostgreSQL text cannot hold (NUL) in the parts of
// m stored as text, and a routing key AMQP cannot carry.
func checkText(m *publisher.Message, rk string) error {
	if strings.IndexByte(m.Type, 0) >= 0 {
		return publisher.Invalid(m.Type, "type contains NUL")
	}
	switch {
	case !utf8.ValidString(rk):
		return publisher.Invalid(m.Type, "routing key is not valid UTF-8")
	case strings.IndexByte(rk, 0) >= 0:
		return publisher.Invalid(m.Type, "routing key contains NUL")
	case len(rk) > maxRoutingKey:
		return publisher.Invalid(m.Type, "routing key longer than %d bytes", maxRoutingKey)
	}
	for k, v := range m.Headers {
		if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return publisher.Invalid(m.Type, "header %q contains NUL", k)
		}
	}
	return nil
}

func cloneHeaders(h map[string]string) map[string]string {
	c := make(map[string]string, len(h)+1)
	for k, v := range h {
		c[k] = v
	}
	return c
}
