package wmforge_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// router runs a router with one handler named "billing" on topic of an
// in-process GoChannel (Watermill's own Pub/Sub, which delivers a nacked
// message again) with mws, and returns the Pub/Sub to publish with.
func router(t *testing.T, topic string, h message.HandlerFunc, outTopic string, pub message.Publisher, mws ...message.HandlerMiddleware) *gochannel.GoChannel {
	t.Helper()
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	r.AddMiddleware(mws...)
	if outTopic == "" {
		r.AddConsumerHandler("billing", topic, ps, func(m *message.Message) error { _, err := h(m); return err })
	} else {
		if pub == nil {
			pub = ps
		}
		r.AddHandler("billing", topic, ps, outTopic, pub, h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = ps.Close() })
	<-r.Running()
	return ps
}

func publish(t *testing.T, ps message.Publisher, topic string, msgs ...*message.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := ps.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
}

// eventually waits until cond holds, for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newDedup(t testing.TB, store dedupe.Store, opts ...wmforge.Option) *wmforge.Deduplicator {
	t.Helper()
	d, err := wmforge.NewDeduplicator(store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestWatermillDeduplicatorDropsFailedMessage shows, on the same router
// and Pub/Sub, what the issue describes: Watermill's Deduplicator marks a
// message seen before its handler runs, so when the handler fails once
// the redelivery is taken for a duplicate and the message is never
// processed; ours releases the claim and processes it.
func TestWatermillDeduplicatorDropsFailedMessage(t *testing.T) {
	run := func(t *testing.T, mw message.HandlerMiddleware) (processed int64, calls int64) {
		var failed, done atomic.Int64
		var n atomic.Int64
		topic := "orders"
		ps := router(t, topic, func(m *message.Message) ([]*message.Message, error) {
			n.Add(1)
			if failed.Add(1) == 1 {
				return nil, errors.New("transient failure")
			}
			done.Add(1)
			return nil, nil
		}, "", nil, mw)
		publish(t, ps, topic, message.NewMessage(uuid.NewString(), []byte("charge 12 EUR")))
		// A second message shows the router kept going past the first.
		marker := message.NewMessage(uuid.NewString(), []byte("marker"))
		publish(t, ps, topic, marker)
		eventually(t, "both messages acked or dropped", func() bool { return n.Load() >= 2 })
		time.Sleep(200 * time.Millisecond) // let a redelivery, if any, run
		return done.Load(), n.Load()
	}
	t.Run("watermill", func(t *testing.T) {
		repo, err := middleware.NewMapExpiringKeyRepository(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wm := &middleware.Deduplicator{Repository: repo, KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }}
		processed, _ := run(t, wm.Middleware)
		if processed != 1 { // only the marker
			t.Fatalf("watermill processed %d messages, want 1 (the failed one dropped); the comparison's premise changed", processed)
		}
	})
	t.Run("uuidforge", func(t *testing.T) {
		store, err := dedupe.NewMemory()
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		processed, _ := run(t, newDedup(t, store).Middleware)
		if processed != 2 {
			t.Fatalf("processed %d messages, want 2 (the failed one processed on redelivery)", processed)
		}
	})
}

// TestDeduplicatorStores: with every store, a message delivered three times
// (a producer retry, a redelivery) is processed once, and one whose handler
// fails once is processed on its redelivery.
func TestDeduplicatorStores(t *testing.T) {
	for _, s := range wmtest.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			var mu sync.Mutex
			runs := map[string]int{}
			done := map[string]int{}
			topic := "orders"
			ps := router(t, topic, func(m *message.Message) ([]*message.Message, error) {
				mu.Lock()
				defer mu.Unlock()
				runs[m.UUID]++
				if string(m.Payload) == "fails once" && runs[m.UUID] == 1 {
					return nil, errors.New("transient failure")
				}
				done[m.UUID]++
				return nil, nil
			}, "", nil, newDedup(t, s.Store).Middleware)
			a, b := uuid.NewString(), uuid.NewString()
			publish(t, ps, topic,
				message.NewMessage(a, []byte("x")), message.NewMessage(a, []byte("x")),
				message.NewMessage(b, []byte("fails once")), message.NewMessage(a, []byte("x")))
			eventually(t, "both processed", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return done[a] >= 1 && done[b] >= 1
			})
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if done[a] != 1 || done[b] != 1 {
				t.Errorf("processed a %d and b %d times, want once each", done[a], done[b])
			}
			if runs[b] != 2 {
				t.Errorf("b ran %d times, want 2 (a failure, then the redelivery)", runs[b])
			}
		})
	}
}

// TestDeduplicatorScope: the default scope is the handler's name, so the
// same ID handled by two handlers is processed by each; outside a router
// (no handler name) the middleware needs WithScope.
func TestDeduplicatorScope(t *testing.T) {
	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	d := newDedup(t, store)
	var calls int
	h := d.Middleware(func(*message.Message) ([]*message.Message, error) { calls++; return nil, nil })
	if _, err := h(message.NewMessage(uuid.NewString(), nil)); !errors.Is(err, wmforge.ErrNoScope) {
		t.Errorf("outside a router: err = %v, want ErrNoScope", err)
	}
	id := uuid.NewString()
	for _, name := range []string{"billing", "shipping", "billing"} {
		m := message.NewMessage(id, []byte("x"))
		m.SetContext(handlerContext(name))
		if _, err := h(m); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 2 {
		t.Errorf("handler ran %d times, want 2 (once per handler name)", calls)
	}
	scoped := newDedup(t, store, wmforge.WithScope("one"))
	h = scoped.Middleware(func(*message.Message) ([]*message.Message, error) { calls++; return nil, nil })
	calls = 0
	for range 2 {
		if _, err := h(message.NewMessage(id, []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("WithScope: handler ran %d times, want 1", calls)
	}
}

// handlerContext returns a context with a router handler name, as the
// router sets it.
func handlerContext(name string) context.Context {
	var ctx context.Context
	r, _ := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	got := make(chan context.Context, 1)
	r.AddConsumerHandler(name, "t", ps, func(m *message.Message) error { got <- m.Context(); return nil })
	c, cancel := context.WithCancel(context.Background())
	go func() { _ = r.Run(c) }()
	<-r.Running()
	_ = ps.Publish("t", message.NewMessage(uuid.NewString(), nil))
	ctx = context.WithoutCancel(<-got)
	cancel()
	return ctx
}

// TestDeduplicatorInFlight: while another consumer holds the claim, the
// handler does not run and the message is not acked; it runs once the
// holder's lease is over.
func TestDeduplicatorInFlight(t *testing.T) {
	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id := uuid.New()
	held, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: id}, 500*time.Millisecond)
	if err != nil || !held.Acquired() {
		t.Fatalf("claim: %v %v", held, err)
	}
	var ranAt atomic.Value
	topic := "orders"
	ps := router(t, topic, func(m *message.Message) ([]*message.Message, error) {
		ranAt.Store(time.Now())
		return nil, nil
	}, "", nil, newDedup(t, store).Middleware)
	publish(t, ps, topic, message.NewMessage(id.String(), []byte("x")))
	eventually(t, "handler ran", func() bool { return ranAt.Load() != nil })
	if at := ranAt.Load().(time.Time); at.Before(held.Until) {
		t.Errorf("handler ran at %v, before the holder's lease ended at %v", at, held.Until)
	}
}

// failingPublisher fails its first n publishes.
type failingPublisher struct {
	message.Publisher
	fail      atomic.Int64
	published atomic.Int64
}

func (p *failingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.fail.Add(-1) >= 0 {
		return errors.New("broker unavailable")
	}
	p.published.Add(int64(len(msgs)))
	return p.Publisher.Publish(topic, msgs...)
}

// TestDeduplicatorCompletesAfterPublish: a handler's output is published by
// the router after the handler returned; when that publish fails the router
// nacks, and the redelivery must run the handler again (its output would
// otherwise be lost for good). Watermill's Deduplicator loses it.
func TestDeduplicatorCompletesAfterPublish(t *testing.T) {
	for _, s := range wmtest.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			var runs atomic.Int64
			out := &failingPublisher{Publisher: gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})}
			out.fail.Store(1)
			topic := "orders"
			ps := router(t, topic, func(m *message.Message) ([]*message.Message, error) {
				runs.Add(1)
				produced, err := wmforge.NewMessageContext(m.Context(), gen, "invoice.requested", []any{m.UUID}, nil)
				return []*message.Message{produced}, err
			}, "invoices", out, newDedup(t, s.Store).Middleware)
			id := uuid.NewString()
			publish(t, ps, topic, message.NewMessage(id, []byte("x")))
			eventually(t, "output published", func() bool { return out.published.Load() == 1 })
			publish(t, ps, topic, message.NewMessage(id, []byte("x"))) // a later duplicate
			time.Sleep(200 * time.Millisecond)
			if r := runs.Load(); r != 2 {
				t.Errorf("handler ran %d times, want 2 (the failed publish, then the redelivery)", r)
			}
			if p := out.published.Load(); p != 1 {
				t.Errorf("published %d messages, want 1", p)
			}
		})
	}
}

// TestDeduplicatorInbox: with the PostgreSQL store the handler's writes
// through pgstore.TxFromContext(msg.Context()) commit with the completion:
// a failing attempt leaves nothing, duplicates do not run, and the row is
// written once.
func TestDeduplicatorInbox(t *testing.T) {
	pool, store := wmtest.Postgres(t)
	ctx := context.Background()
	table := wmtest.Name(t, "wm_invoices")
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (message_id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	var runs atomic.Int64
	var noTx atomic.Bool
	topic := "orders"
	ps := router(t, topic, func(m *message.Message) ([]*message.Message, error) {
		tx, ok := pgstore.TxFromContext(m.Context())
		if !ok {
			noTx.Store(true)
			return nil, errors.New("no transaction")
		}
		if _, err := tx.Exec(m.Context(), "INSERT INTO "+table+" VALUES ($1)", m.UUID); err != nil {
			return nil, err
		}
		if runs.Add(1) == 1 {
			return nil, errors.New("fails after its write") // rolled back
		}
		return nil, nil
	}, "", nil, newDedup(t, store).Middleware)
	id := uuid.NewString()
	publish(t, ps, topic, message.NewMessage(id, []byte("x")), message.NewMessage(id, []byte("x")))
	eventually(t, "row written", func() bool {
		var n int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n == 1
	})
	publish(t, ps, topic, message.NewMessage(id, []byte("x")))
	time.Sleep(200 * time.Millisecond)
	if noTx.Load() {
		t.Fatal("the handler found no transaction in its message's context")
	}
	if r := runs.Load(); r != 2 {
		t.Errorf("handler ran %d times, want 2 (the failure, rolled back, then once)", r)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows (%v), want 1", n, err)
	}
	// WithoutInbox: the same store as a plain one, no transaction.
	d := newDedup(t, store, wmforge.WithoutInbox(), wmforge.WithScope("plain"))
	_, err := d.Middleware(func(m *message.Message) ([]*message.Message, error) {
		if _, ok := pgstore.TxFromContext(m.Context()); ok {
			t.Error("WithoutInbox: the handler got a transaction")
		}
		return nil, nil
	})(message.NewMessage(uuid.NewString(), nil))
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeduplicatorPanic: a panicking handler's claim is given back (and its
// inbox transaction rolled back), so the redelivery runs it again.
func TestDeduplicatorPanic(t *testing.T) {
	for _, s := range wmtest.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			d := newDedup(t, s.Store, wmforge.WithScope("panic"))
			var runs int
			h := d.Middleware(func(*message.Message) ([]*message.Message, error) {
				runs++
				if runs == 1 {
					panic("boom")
				}
				return nil, nil
			})
			id := uuid.NewString()
			func() {
				defer func() {
					if recover() == nil {
						t.Error("the panic did not reach the router")
					}
				}()
				_, _ = h(message.NewMessage(id, []byte("x")))
			}()
			if _, err := h(message.NewMessage(id, []byte("x"))); err != nil {
				t.Fatal(err)
			}
			if runs != 2 {
				t.Errorf("ran %d times, want 2", runs)
			}
		})
	}
}

// TestMessageID: the ID the middleware keys on.
func TestMessageID(t *testing.T) {
	id := uuid.New()
	m := message.NewMessage("01J9Z3K6Q8W2E4R6T8Y0U2I4O6", []byte("x"))
	m.Metadata.Set(wmforge.MetadataMessageID, id.String())
	if got, _ := wmforge.MessageID(gen, m); got != id {
		t.Errorf("with message-id metadata: %s, want %s", got, id)
	}
	if got, _ := wmforge.MessageID(gen, message.NewMessage(strings.ToUpper(id.String()), nil)); got != id {
		t.Errorf("upper-case UUID: %s, want %s", got, id)
	}
	m = message.NewMessage("not a uuid", []byte("body"))
	m.Metadata.Set(wmforge.MetadataMessageType, "t")
	want, _ := consumer.ContentID(gen, "t", nil, []byte("body"))
	if got, _ := wmforge.MessageID(gen, m); got != want {
		t.Errorf("content ID: %s, want %s", got, want)
	}
}
