package wmrabbit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmrabbit"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
)

var gen = forge.MustNew("watermill.test.example")

func pubSub(t *testing.T, url string, subOpts ...wmrabbit.Option) (*wmrabbit.Publisher, *wmrabbit.Subscriber) {
	t.Helper()
	pubOpts, base := suiteOptions()
	p, err := wmrabbit.NewPublisher(url, gen, pubOpts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := wmrabbit.NewSubscriber(url, append(base, subOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(); _ = s.Close() })
	return p, s
}

// runRouter runs r until the test ends.
func runRouter(t *testing.T, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-r.Running()
}

func newRouter(t *testing.T) *message.Router {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	url := wmtest.AMQPURL(t)
	p, s := pubSub(t, url)
	wmtest.RoundTrip(t, p, s, wmtest.Name(t, "wm_rt"))
}

// queueDepth returns the number of ready messages in queue.
func queueDepth(t *testing.T, url, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue %s: %v", queue, err)
	}
	return q.Messages
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRouterInboxAndLineage: a router reading from RabbitMQ through the
// adapter, with the PostgreSQL inbox. The handler writes a row through the
// inbox transaction and produces a message derived from the one it
// handles; its first attempt fails after writing. The row is written once,
// the message is processed once although published twice, the produced
// message carries the lineage, and the input queue is left empty (acked).
func TestRouterInboxAndLineage(t *testing.T) {
	url := wmtest.AMQPURL(t)
	pool, store := wmtest.Postgres(t)
	ctx := context.Background()
	table := wmtest.Name(t, "wm_invoices")
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (order_id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	dedup, err := wmforge.NewDeduplicator(store)
	if err != nil {
		t.Fatal(err)
	}
	in, out := wmtest.Name(t, "wm_orders"), wmtest.Name(t, "wm_invoices")
	p, s := pubSub(t, url)
	r := newRouter(t)
	r.AddMiddleware(dedup.Middleware)
	var runs atomic.Int64
	r.AddHandler("billing", in, s, out, p, func(msg *message.Message) ([]*message.Message, error) {
		order := msg.Metadata.Get("order-id")
		tx, ok := pgstore.TxFromContext(msg.Context())
		if !ok {
			return nil, errors.New("no inbox transaction")
		}
		if _, err := tx.Exec(msg.Context(), "INSERT INTO "+table+" VALUES ($1)", order); err != nil {
			return nil, err
		}
		if runs.Add(1) == 1 {
			return nil, errors.New("fails after writing")
		}
		produced, err := wmforge.NewMessageContext(msg.Context(), gen, "invoice.requested", []any{order}, nil)
		return []*message.Message{produced}, err
	})
	_, outSub := pubSub(t, url)
	if err := outSub.SubscribeInitialize(out); err != nil {
		t.Fatal(err)
	}
	runRouter(t, r)

	msg, err := wmforge.NewMessage(gen, "order.created", []any{"o-1001"}, []byte(`{"total":12}`))
	if err != nil {
		t.Fatal(err)
	}
	msg.Metadata.Set("order-id", "o-1001")
	for range 2 { // a producer retry: the same message twice
		if err := p.Publish(in, msg.Copy()); err != nil {
			t.Fatal(err)
		}
	}
	outs, err := outSub.Subscribe(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	var got *message.Message
	select {
	case got = <-outs:
		got.Ack()
	case <-time.After(20 * time.Second):
		t.Fatal("no invoice message")
	}
	// The row commits with the completion when the router acks, after it
	// published the invoice.
	eventually(t, "row committed", func() bool {
		var n int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n == 1
	})
	eventually(t, "input queue drained", func() bool { return queueDepth(t, url, in) == 0 })
	time.Sleep(300 * time.Millisecond)

	if r := runs.Load(); r != 2 {
		t.Errorf("handler ran %d times, want 2 (the failure, then once; the copy a duplicate)", r)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows (%v), want 1", n, err)
	}
	parent := uuid.MustParse(msg.UUID)
	if want := gen.MustID(parent, "invoice.requested", "o-1001"); got.UUID != want.String() {
		t.Errorf("invoice UUID %s, want gen.ID(parent, type, key) = %s", got.UUID, want)
	}
	if got.Metadata.Get(wmforge.MetadataCausationID) != msg.UUID || got.Metadata.Get(wmforge.MetadataCorrelationID) != msg.UUID {
		t.Errorf("invoice lineage: causation %s correlation %s, want both %s",
			got.Metadata.Get(wmforge.MetadataCausationID), got.Metadata.Get(wmforge.MetadataCorrelationID), msg.UUID)
	}
	select {
	case extra := <-outs:
		t.Errorf("a second invoice message: %s", extra.UUID)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestRouterInFlightWaits: while another consumer holds a message's claim,
// the router's handler does not run and the message is not acked — not
// even with WithDeadLetterAfter(1), since waiting for a lease is not a
// failure; it runs once the holder's lease is over.
func TestRouterInFlightWaits(t *testing.T) {
	url := wmtest.AMQPURL(t)
	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dedup, err := wmforge.NewDeduplicator(store)
	if err != nil {
		t.Fatal(err)
	}
	topic := wmtest.Name(t, "wm_orders")
	p, s := pubSub(t, url, wmrabbit.WithDeadLetterAfter(1))
	id := uuid.New()
	held, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: id}, time.Second)
	if err != nil || !held.Acquired() {
		t.Fatalf("claim: %v %v", held, err)
	}
	var ranAt atomic.Value
	r := newRouter(t)
	r.AddMiddleware(dedup.Middleware)
	r.AddConsumerHandler("billing", topic, s, func(*message.Message) error { ranAt.Store(time.Now()); return nil })
	runRouter(t, r)
	if err := p.Publish(topic, message.NewMessage(id.String(), []byte("x"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "handler ran", func() bool { return ranAt.Load() != nil })
	if at := ranAt.Load().(time.Time); at.Before(held.Until) {
		t.Errorf("handler ran at %v, before the holder's lease ended at %v", at, held.Until)
	}
	eventually(t, "acked", func() bool { return queueDepth(t, url, topic) == 0 })
	if n := queueDepth(t, url, topic+consumer.DeadLetterSuffix); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
}

// TestNackRedeliversByDefault: a message nacked many times is delivered
// again every time and nothing reaches the dead letter; with
// WithDeadLetterAfter(3) the third nack dead-letters it.
func TestNackRedeliversByDefault(t *testing.T) {
	url := wmtest.AMQPURL(t)
	for _, tc := range []struct {
		name  string
		opts  []wmrabbit.Option
		nacks int
		dead  int
	}{
		{"default", nil, 20, 0},
		{"WithDeadLetterAfter", []wmrabbit.Option{wmrabbit.WithDeadLetterAfter(3)}, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := wmtest.Name(t, "wm_nack")
			p, s := pubSub(t, url, tc.opts...)
			ch, err := s.Subscribe(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			id := uuid.NewString()
			if err := p.Publish(topic, message.NewMessage(id, []byte("x"))); err != nil {
				t.Fatal(err)
			}
			for i := range tc.nacks {
				select {
				case m := <-ch:
					if m.UUID != id {
						t.Fatalf("got %s", m.UUID)
					}
					m.Nack()
				case <-time.After(10 * time.Second):
					t.Fatalf("delivery %d did not come", i+1)
				}
			}
			if tc.dead == 0 {
				select {
				case m := <-ch:
					m.Ack()
				case <-time.After(10 * time.Second):
					t.Fatal("not delivered again after the last nack")
				}
			} else {
				eventually(t, "dead letter", func() bool { return queueDepth(t, url, topic+consumer.DeadLetterSuffix) == tc.dead })
			}
			eventually(t, "queue empty", func() bool { return queueDepth(t, url, topic) == 0 })
		})
	}
}
