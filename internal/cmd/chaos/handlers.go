package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// chances are the seeded decisions the handlers make: which attempts fail
// (failRate of them, a quarter of those by panicking) and which messages are
// acknowledged without their effect (dropShare of them: a handler bug the
// check must catch).
type chances struct {
	seed                uint64
	failRate, dropShare float64
}

// failure decides, from the seed, the message ID and the attempt, whether
// this attempt fails and whether it panics (a quarter of the failures).
func (c chances) failure(m *consumer.Message) (fail, panics bool) {
	sum := c.hash(m.ID, uint64(m.Attempt))
	u := float64(sum>>11) / (1 << 53)
	return u < c.failRate, sum&3 == 0
}

// drop decides, from the seed and the message ID alone, whether the message
// is dropped: every copy of it, and its replay, are dropped alike.
func (c chances) drop(id uuid.UUID) bool {
	if c.dropShare == 0 {
		return false
	}
	sum := c.hash(id, 1<<63)
	return float64(sum>>11)/(1<<53) < c.dropShare
}

func (c chances) hash(id uuid.UUID, n uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], c.seed)
	h.Write(b[:])
	h.Write(id[:])
	binary.BigEndian.PutUint64(b[:], n)
	h.Write(b[:])
	return mix(h.Sum64())
}

// mix is SplitMix64's finaliser: FNV's low bits are poorly distributed.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// errInjected is the transient failure a handler returns on purpose.
var errInjected = errors.New("chaos: injected transient failure")

// faulty is what every handler of the run shares: the seeded failures and
// drops, and the table that records them.
type faulty struct {
	pool    *pgxpool.Pool
	table   string
	chances chances
	worker  int
	role    string
}

func (f *faulty) record(ctx context.Context, kind string, m *consumer.Message) {
	// Outside the handler's transaction, which may be about to roll back.
	_, _ = f.pool.Exec(context.WithoutCancel(ctx), "INSERT INTO "+f.table+" (kind, role, message_id, worker) VALUES ($1, $2, $3, $4)",
		kind, f.role, m.ID, f.worker)
}

// inject runs after the handler's writes: for a seeded share of the
// attempts it records a failure and returns an error or panics, so that the
// writes must be rolled back.
func (f *faulty) inject(ctx context.Context, m *consumer.Message) error {
	fail, panics := f.chances.failure(m)
	if !fail {
		return nil
	}
	if panics {
		f.record(ctx, "panic", m)
		panic(fmt.Sprintf("chaos: injected panic handling %s", m.ID))
	}
	f.record(ctx, "error", m)
	return fmt.Errorf("handling %s, attempt %d: %w", m.ID, m.Attempt, errInjected)
}

// dropped reports that the message is to be acknowledged without its
// effect, and records it.
func (f *faulty) dropped(ctx context.Context, m *consumer.Message) bool {
	if !f.chances.drop(m.ID) {
		return false
	}
	f.record(ctx, "drop", m)
	return true
}

// inTx runs fn in the inbox's transaction when there is one (the dedupe
// middleware with pgstore put it in ctx; a pgoutbox publisher finds it there
// by itself), and otherwise (-no-dedupe) in a transaction of its own, given
// to pgoutbox with NewContext.
func inTx(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if tx, ok := pgstore.TxFromContext(ctx); ok {
		return fn(ctx, tx)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return fn(pgoutbox.NewContext(ctx, tx), tx)
	})
}

// effectHandler applies a message of the message scenario: one row in the
// effects table.
type effectHandler struct {
	*faulty
	effects string
}

func (e *effectHandler) Handle(ctx context.Context, m *consumer.Message) error {
	if e.dropped(ctx, m) {
		return nil
	}
	return inTx(ctx, e.pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+e.effects+" (message_id, source, worker, attempt) VALUES ($1, $2, $3, $4)",
			m.ID, m.Source, e.worker, m.Attempt); err != nil {
			return fmt.Errorf("chaos: write effect of %s: %w", m.ID, err)
		}
		return e.inject(ctx, m)
	})
}

// The outbox scenario's messages and destinations.
const (
	typeOrderPlaced     = "order.placed"
	typePaymentCaptured = "payment.captured"
	destOrders          = "orders"   // → the run's RabbitMQ queue
	destPayments        = "payments" // → the run's Kafka topic
)

// orderEvent is the body of order.placed and payment.captured.
type orderEvent struct {
	Run    string `json:"run"`
	Order  int64  `json:"order"`
	Amount int64  `json:"amount"`
}

func parseOrderEvent(m *consumer.Message) (orderEvent, error) {
	var o orderEvent
	if err := json.Unmarshal(m.Body, &o); err != nil {
		return o, consumer.Permanent(fmt.Errorf("chaos: %s %s: %w", m.Type, m.ID, err))
	}
	return o, nil
}

// billingHandler charges an order: for each order.placed it writes a charge
// and enqueues payment.captured through the outbox, in the inbox's
// transaction, then may fail as the chances say, which must roll back both.
type billingHandler struct {
	*faulty
	charges string
	pub     *pgoutbox.Publisher
}

func newBilling(f *faulty, cfg workerConfig) (*billingHandler, func(), error) {
	store, err := pgoutbox.New(f.pool, pgoutbox.WithTable(cfg.tables.outbox()))
	if err != nil {
		return nil, nil, fmt.Errorf("chaos: outbox: %w", err)
	}
	gen, err := forge.New(namespace)
	if err != nil {
		return nil, nil, err
	}
	pub, err := pgoutbox.NewPublisher(store, destPayments, gen)
	if err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("chaos: outbox publisher: %w", err)
	}
	return &billingHandler{faulty: f, charges: cfg.tables.charges(), pub: pub}, func() { _ = store.Close() }, nil
}

func (b *billingHandler) Handle(ctx context.Context, m *consumer.Message) error {
	o, err := parseOrderEvent(m)
	if err != nil {
		return err
	}
	return inTx(ctx, b.pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+b.charges+" (order_no, amount, message_id, worker) VALUES ($1, $2, $3, $4)",
			o.Order, o.Amount, m.ID, b.worker); err != nil {
			return fmt.Errorf("chaos: charge order %d: %w", o.Order, err)
		}
		body, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if err := b.pub.Publish(ctx, publisher.Message{Type: typePaymentCaptured, Key: []any{o.Run, o.Order}, Body: body}); err != nil {
			return fmt.Errorf("chaos: enqueue payment of order %d: %w", o.Order, err)
		}
		return b.inject(ctx, m)
	})
}

// receiptHandler writes a receipt for each payment.captured: the last
// effect of the outbox scenario, checked against its order.
type receiptHandler struct {
	*faulty
	receipts string
}

func (r *receiptHandler) Handle(ctx context.Context, m *consumer.Message) error {
	o, err := parseOrderEvent(m)
	if err != nil {
		return err
	}
	if r.dropped(ctx, m) {
		return nil
	}
	return inTx(ctx, r.pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+r.receipts+" (order_no, amount, message_id, causation_id, worker) VALUES ($1, $2, $3, $4, $5)",
			o.Order, o.Amount, m.ID, m.CausationID, r.worker); err != nil {
			return fmt.Errorf("chaos: receipt of order %d: %w", o.Order, err)
		}
		return r.inject(ctx, m)
	})
}
