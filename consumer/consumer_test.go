package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
)

func msg() *consumer.Message {
	id := uuid.New()
	return &consumer.Message{ID: id, CorrelationID: id, Type: "t", Body: []byte("b"), Attempt: 1}
}

func TestChainOrder(t *testing.T) {
	var trail []string
	mw := func(name string) consumer.Middleware {
		return func(next consumer.Handler) consumer.Handler {
			return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				trail = append(trail, name)
				return next.Handle(ctx, m)
			})
		}
	}
	h := consumer.Chain(mw("a"), nil, mw("b"), mw("c"))(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		trail = append(trail, "h")
		return nil
	}))
	if err := h.Handle(context.Background(), msg()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(trail, ","); got != "a,b,c,h" {
		t.Fatalf("order %s, want a,b,c,h", got)
	}
}

func TestRecover(t *testing.T) {
	sentinel := errors.New("boom")
	for _, tc := range []struct {
		name  string
		value any
		is    error
	}{
		{"string", "oops", nil},
		{"error", sentinel, sentinel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := consumer.Recover()(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { panic(tc.value) }))
			err := h.Handle(context.Background(), msg())
			var pe *consumer.PanicError
			if !errors.As(err, &pe) {
				t.Fatalf("err %v is not a PanicError", err)
			}
			if pe.Value != tc.value || !strings.Contains(err.Error(), "goroutine") {
				t.Fatalf("panic error %q lacks value or stack", err)
			}
			if tc.is != nil && !errors.Is(fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err)), tc.is) {
				t.Fatal("errors.Is through two wraps lost the panic value")
			}
		})
	}
}

func newDedupe(t *testing.T, store dedupe.Store, opts ...consumer.Option) consumer.Middleware {
	t.Helper()
	return consumer.Dedupe(store, "test-scope", opts...)
}

func newMemory(t testing.TB) *dedupe.Memory {
	t.Helper()
	m, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestDedupe(t *testing.T) {
	ctx := context.Background()
	t.Run("success then duplicate", func(t *testing.T) {
		store := newMemory(t)
		var calls atomic.Int32
		h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { calls.Add(1); return nil }))
		m := msg()
		for range 3 {
			if err := h.Handle(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		if calls.Load() != 1 {
			t.Fatalf("handler ran %d times, want 1", calls.Load())
		}
		c, err := store.Claim(ctx, dedupe.Key{Scope: "test-scope", ID: m.ID}, 0)
		if err != nil || c.Status != dedupe.Duplicate {
			t.Fatalf("claim after success = %v, %v; want duplicate", c.Status, err)
		}
	})
	t.Run("failure releases", func(t *testing.T) {
		store := newMemory(t)
		var calls atomic.Int32
		fail := errors.New("transient")
		h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
			if calls.Add(1) == 1 {
				return fail
			}
			return nil
		}))
		m := msg()
		if err := h.Handle(ctx, m); !errors.Is(err, fail) {
			t.Fatalf("first call: %v, want the handler's error", err)
		}
		if err := h.Handle(ctx, m); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if calls.Load() != 2 {
			t.Fatalf("handler ran %d times, want 2", calls.Load())
		}
	})
	t.Run("panic releases", func(t *testing.T) {
		store := newMemory(t)
		h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { panic("x") }))
		m := msg()
		func() {
			defer func() { _ = recover() }()
			_ = h.Handle(ctx, m)
		}()
		c, err := store.Claim(ctx, dedupe.Key{Scope: "test-scope", ID: m.ID}, 0)
		if err != nil || c.Status != dedupe.Acquired {
			t.Fatalf("claim after panic = %v, %v; want acquired", c.Status, err)
		}
	})
	t.Run("in flight", func(t *testing.T) {
		store := newMemory(t)
		m := msg()
		held, err := store.Claim(ctx, dedupe.Key{Scope: "test-scope", ID: m.ID}, time.Minute)
		if err != nil || !held.Acquired() {
			t.Fatal(held, err)
		}
		var calls atomic.Int32
		h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { calls.Add(1); return nil }))
		err = h.Handle(ctx, m)
		var ife *consumer.InFlightError
		if !errors.Is(err, consumer.ErrInFlight) || !errors.As(err, &ife) || ife.Until.Before(time.Now()) {
			t.Fatalf("err %v, want ErrInFlight with a future Until", err)
		}
		if calls.Load() != 0 {
			t.Fatal("handler ran while the message was in flight elsewhere")
		}
		if !consumer.Waiting(err) || consumer.ShouldDeadLetter(err, 99, 1) {
			t.Fatal("in flight must wait, never be dead-lettered")
		}
	})
	t.Run("store error", func(t *testing.T) {
		store := newMemory(t)
		store.Close()
		var calls atomic.Int32
		h := newDedupe(t, store)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { calls.Add(1); return nil }))
		err := fmt.Errorf("loop: %w", h.Handle(ctx, msg()))
		if !errors.Is(err, consumer.ErrStore) || !errors.Is(err, dedupe.ErrClosed) {
			t.Fatalf("err %v, want ErrStore wrapping ErrClosed", err)
		}
		if calls.Load() != 0 || consumer.ShouldDeadLetter(err, 99, 1) {
			t.Fatal("store error ran the handler or asked for the dead letter")
		}
	})
	t.Run("bad config", func(t *testing.T) {
		mustPanic := func(name string, f func()) {
			t.Helper()
			defer func() {
				v := recover()
				msg, _ := v.(string)
				switch {
				case v == nil:
					t.Errorf("%s: Dedupe did not panic", name)
				case !strings.HasPrefix(msg, "consumer: Dedupe: ") || strings.Count(msg, "consumer") != 1:
					t.Errorf("%s: Dedupe panicked with %#v, want one message naming the package once", name, v)
				}
			}()
			f()
		}
		mustPanic("empty scope", func() { consumer.Dedupe(newMemory(t), "") })
		mustPanic("nil store", func() { consumer.Dedupe(nil, "s") })
		mustPanic("negative lease", func() { consumer.Dedupe(newMemory(t), "s", consumer.WithLease(-time.Second)) })
		h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
		if _, err := consumer.NewHandler(h, consumer.WithDedupe(newMemory(t), "")); !errors.Is(err, dedupe.ErrInvalidKey) {
			t.Fatalf("NewHandler with an empty scope: %v", err)
		}
		if _, err := consumer.NewHandler(h, consumer.WithDedupe(nil, "s")); err == nil {
			t.Fatal("NewHandler accepted a nil store")
		}
	})
}

func fastBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = time.Millisecond
	b.MaxInterval = 5 * time.Millisecond
	b.MaxElapsedTime = 0
	return backoff.WithMaxRetries(b, 4)
}

func TestRetry(t *testing.T) {
	transient := errors.New("transient")
	for _, tc := range []struct {
		name      string
		failures  int
		err       error
		wantCalls int32
		wantErr   bool
	}{
		{"recovers", 3, transient, 4, false},
		{"gives up", 10, transient, 5, true},
		{"permanent", 10, consumer.Permanent(transient), 1, true},
		{"backoff permanent", 10, fmt.Errorf("wrapped: %w", backoff.Permanent(transient)), 1, true},
		{"in flight", 10, &consumer.InFlightError{ID: uuid.New()}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			h := consumer.Retry(fastBackOff)(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
				if int(calls.Add(1)) <= tc.failures {
					return tc.err
				}
				return nil
			}))
			err := h.Handle(context.Background(), msg())
			if (err != nil) != tc.wantErr || calls.Load() != tc.wantCalls {
				t.Fatalf("err %v after %d calls; want error %v after %d", err, calls.Load(), tc.wantErr, tc.wantCalls)
			}
			if err != nil && !errors.Is(err, transient) && !errors.Is(err, consumer.ErrInFlight) {
				t.Fatalf("last error lost: %v", err)
			}
		})
	}
}

func TestDeadLetter(t *testing.T) {
	transient, bad, dlDown := errors.New("transient"), errors.New("bad"), errors.New("dl down")
	for _, tc := range []struct {
		name    string
		err     error
		dlErr   error
		wantDL  bool
		wantErr error
	}{
		{"permanent stored", consumer.Permanent(bad), nil, true, nil},
		{"permanent, dead letter fails", consumer.Permanent(bad), dlDown, true, dlDown},
		{"transient", transient, nil, false, transient},
		{"store error", &consumer.InFlightError{}, nil, false, consumer.ErrInFlight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got error
			h := consumer.DeadLetter(func(_ context.Context, _ *consumer.Message, reason error) error {
				got = reason
				return tc.dlErr
			})(consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return tc.err }))
			err := h.Handle(context.Background(), msg())
			if (got != nil) != tc.wantDL {
				t.Fatalf("dead letter called = %v, want %v", got != nil, tc.wantDL)
			}
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestTimeoutAndLineage(t *testing.T) {
	m := msg()
	m.CausationID = uuid.New()
	h := consumer.Chain(consumer.Lineage(), consumer.Timeout(20*time.Millisecond))(consumer.HandlerFunc(func(ctx context.Context, got *consumer.Message) error {
		l, ok := lineage.FromContext(ctx)
		if !ok || l != consumer.LineageOf(m) || l.CausationID != m.CausationID {
			return fmt.Errorf("lineage %+v, %v", l, ok)
		}
		<-ctx.Done()
		return ctx.Err()
	}))
	start := time.Now()
	if err := h.Handle(context.Background(), m); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestContentIDGolden(t *testing.T) {
	// Computed from the definition in forge/SPEC.md (section "Content IDs"), not from forge.
	ns := uuid.NewSHA1(uuid.NameSpaceDNS, []byte(consumer.DefaultContentNamespace))
	want := uuid.NewSHA1(ns, []byte(`["","azE=","aGVsbG8="]`))
	g := forge.MustNew(consumer.DefaultContentNamespace)
	got, err := consumer.ContentID(g, "", []byte("k1"), []byte("hello"))
	if err != nil || got != want {
		t.Fatalf("ContentID = %s, %v; want %s", got, err, want)
	}
	nilKey, _ := consumer.ContentID(g, "", nil, []byte("hello"))
	emptyKey, _ := consumer.ContentID(g, "", []byte{}, []byte("hello"))
	if nilKey != emptyKey {
		t.Fatal("nil and empty key differ")
	}
	if other, _ := consumer.ContentID(g, "x", []byte("k1"), []byte("hello")); other == got {
		t.Fatal("type does not change the content ID")
	}
}

func TestIdentify(t *testing.T) {
	g := forge.MustNew(consumer.DefaultContentNamespace)
	id, corr, cause := uuid.New(), uuid.New(), uuid.New()
	for _, tc := range []struct {
		name    string
		raw     consumer.Identity
		policy  consumer.MissingIDPolicy
		wantErr error
		check   func(*consumer.Message) bool
	}{
		{"all set", consumer.Identity{id.String(), corr.String(), cause.String()}, consumer.MissingIDContent, nil,
			func(m *consumer.Message) bool {
				return m.ID == id && m.CorrelationID == corr && m.CausationID == cause && !m.ContentID
			}},
		{"correlation defaults", consumer.Identity{MessageID: id.String()}, consumer.MissingIDContent, nil,
			func(m *consumer.Message) bool {
				return m.ID == id && m.CorrelationID == id && m.CausationID == uuid.Nil
			}},
		{"content ID", consumer.Identity{}, consumer.MissingIDContent, nil,
			func(m *consumer.Message) bool { return m.ContentID && m.ID == g.MustID("t", []byte{}, []byte("b")) }},
		{"missing, dead letter", consumer.Identity{}, consumer.MissingIDDeadLetter, consumer.ErrMissingID, nil},
		{"malformed", consumer.Identity{MessageID: "not-a-uuid"}, consumer.MissingIDContent, consumer.ErrMalformedID, nil},
		{"nil UUID", consumer.Identity{MessageID: uuid.Nil.String()}, consumer.MissingIDContent, consumer.ErrMalformedID, nil},
		{"malformed correlation", consumer.Identity{MessageID: id.String(), CorrelationID: "x"}, consumer.MissingIDContent, consumer.ErrMalformedID, nil},
		{"malformed causation", consumer.Identity{MessageID: id.String(), CausationID: "x"}, consumer.MissingIDContent, consumer.ErrMalformedID, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &consumer.Message{Type: "t", Body: []byte("b")}
			err := consumer.Identify(m, tc.raw, g, tc.policy)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !consumer.ShouldDeadLetter(err, 1, 5) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(m) {
				t.Fatalf("err %v, message %+v", err, m)
			}
		})
	}
}

func FuzzIdentify(f *testing.F) {
	for _, s := range []string{"", "not-a-uuid", uuid.Nil.String(), uuid.NewString(), "{" + uuid.NewString() + "}", "\xff"} {
		f.Add(s, s, []byte("body"))
	}
	g := forge.MustNew(consumer.DefaultContentNamespace)
	f.Fuzz(func(t *testing.T, id, typ string, body []byte) {
		m := &consumer.Message{Type: typ, Body: body}
		err := consumer.Identify(m, consumer.Identity{MessageID: id}, g, consumer.MissingIDContent)
		if err == nil && (m.ID == uuid.Nil || m.CorrelationID != m.ID) {
			t.Fatalf("accepted %q with ID %s correlation %s", id, m.ID, m.CorrelationID)
		}
		if err != nil && id != "" && !errors.Is(err, consumer.ErrMalformedID) {
			t.Fatalf("unexpected error kind for %q: %v", id, err)
		}
	})
}

func TestProcessor(t *testing.T) {
	transient := errors.New("transient")
	for _, tc := range []struct {
		name         string
		errs         []error // per attempt; nil afterwards
		max          int
		want         consumer.Outcome
		wantAttempts int
	}{
		{"first try", nil, 3, consumer.OutcomeAck, 1},
		{"retried in place", []error{transient, transient}, 3, consumer.OutcomeAck, 3},
		{"dead letter after max", []error{transient, transient, transient, transient}, 3, consumer.OutcomeDeadLetter, 3},
		{"permanent at once", []error{consumer.Permanent(transient)}, 3, consumer.OutcomeDeadLetter, 1},
		{"in flight waits past max", []error{&consumer.InFlightError{Until: time.Now()}, &consumer.InFlightError{}, &consumer.InFlightError{}, &consumer.InFlightError{}}, 2, consumer.OutcomeAck, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := consumer.Processor{MaxAttempts: tc.max, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
				Handler: consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
					if m.Attempt <= len(tc.errs) {
						return tc.errs[m.Attempt-1]
					}
					return nil
				})}
			m := msg()
			got, _ := p.Process(context.Background(), context.Background(), m)
			if got != tc.want || m.Attempt != tc.wantAttempts {
				t.Fatalf("outcome %v after %d attempts, want %v after %d", got, m.Attempt, tc.want, tc.wantAttempts)
			}
		})
	}
	t.Run("stop abandons", func(t *testing.T) {
		stop, cancel := context.WithCancel(context.Background())
		p := consumer.Processor{MinBackoff: time.Hour, Handler: consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
			cancel()
			return fmt.Errorf("wrapped: %w", &consumer.InFlightError{})
		})}
		if got, err := p.Process(stop, context.Background(), msg()); got != consumer.OutcomeAbandon || !errors.Is(err, consumer.ErrInFlight) {
			t.Fatalf("outcome %v, %v; want abandon", got, err)
		}
	})
}

func TestDedupeInboxSelection(t *testing.T) {
	store := testsink.Postgres(t)
	for _, tc := range []struct {
		name   string
		opts   []consumer.Option
		wantTx bool
	}{
		{"inbox", nil, true},
		{"without inbox", []consumer.Option{consumer.WithoutInbox(), consumer.WithRetention(time.Hour), consumer.WithLease(time.Minute)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sawTx, called bool
			h := newDedupe(t, store, tc.opts...)(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				_, sawTx = pgstore.TxFromContext(ctx)
				called = true
				return nil
			}))
			m := msg()
			if err := h.Handle(context.Background(), m); err != nil || !called || sawTx != tc.wantTx {
				t.Fatalf("err %v, called %v, transaction in context %v; want %v", err, called, sawTx, tc.wantTx)
			}
			called = false
			if err := h.Handle(context.Background(), m); err != nil || called {
				t.Fatalf("redelivery: err %v, handler called %v", err, called)
			}
		})
	}
}
