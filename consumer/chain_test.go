package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

func TestNewHandlerStandardChain(t *testing.T) {
	store := newMemory(t)
	var calls atomic.Int32
	var order []string
	mw := func(name string) consumer.Middleware {
		return func(next consumer.Handler) consumer.Handler {
			return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				order = append(order, name)
				return next.Handle(ctx, m)
			})
		}
	}
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if l, ok := lineage.FromContext(ctx); !ok || l.MessageID != m.ID {
			return fmt.Errorf("no lineage in the handler's context: %+v", l)
		}
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("no timeout in the handler's context")
		}
		if calls.Add(1) == 1 {
			panic("first call panics")
		}
		return nil
	}), consumer.WithDedupe(store, "billing"), consumer.WithLease(time.Minute), consumer.WithTimeout(time.Second),
		consumer.WithMiddleware(mw("a"), mw("b")))
	if err != nil {
		t.Fatal(err)
	}
	m := msg()
	var pe *consumer.PanicError
	if err := h.Handle(context.Background(), m); !errors.As(err, &pe) {
		t.Fatalf("first delivery: %v, want the recovered panic", err)
	}
	for range 2 {
		if err := h.Handle(context.Background(), m); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
	}
	if calls.Load() != 2 || strings.Join(order, "") != "abab" {
		t.Fatalf("handler calls %d, middleware order %q; want 2 and abab (the duplicate skips them)", calls.Load(), order)
	}
}

func TestNewHandlerRejectsTimeoutAtOrAboveLease(t *testing.T) {
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	_, err := consumer.NewHandler(h, consumer.WithDedupe(newMemory(t), "s"), consumer.WithLease(time.Second), consumer.WithTimeout(time.Second))
	if err == nil || !strings.Contains(err.Error(), "below the dedupe lease") {
		t.Fatalf("NewHandler = %v, want an error about the timeout and the lease", err)
	}
	// The default lease counts too.
	if _, err := consumer.NewHandler(h, consumer.WithDedupe(newMemory(t), "s"), consumer.WithTimeout(time.Hour)); err == nil {
		t.Fatal("a timeout above the default lease was accepted")
	}
}

func TestCheck(t *testing.T) {
	store := newMemory(t)
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	for _, tc := range []struct {
		name string
		mws  []consumer.Middleware
		bad  bool
	}{
		{"recommended", []consumer.Middleware{consumer.Lineage(), consumer.Retry(nil), consumer.Dedupe(store, "a"), consumer.Timeout(time.Second), consumer.Recover()}, false},
		{"retry inside dedupe", []consumer.Middleware{consumer.Dedupe(store, "a"), consumer.Timeout(time.Second), consumer.Retry(nil)}, true},
		{"same scope twice", []consumer.Middleware{consumer.Dedupe(store, "a"), consumer.Recover(), consumer.Dedupe(store, "a")}, true},
		{"two scopes", []consumer.Middleware{consumer.Dedupe(store, "a"), consumer.Dedupe(store, "b")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := consumer.Check(consumer.Chain(tc.mws...)(h))
			if tc.bad != errors.Is(err, consumer.ErrChainOrder) {
				t.Fatalf("Check = %v, want a misordering: %v", err, tc.bad)
			}
		})
	}
	// The standard chain around a hand-built one sees its layers.
	inner := consumer.Chain(consumer.Dedupe(store, "a"))(h)
	if _, err := consumer.NewHandler(inner, consumer.WithDedupe(store, "a")); !errors.Is(err, consumer.ErrChainOrder) {
		t.Fatalf("NewHandler around a Dedupe of the same scope = %v, want ErrChainOrder", err)
	}
	// What WithMiddleware's doc says New refuses, with the optional layers
	// above it present.
	secret, err := forge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	keyed := forge.MustNew("orders.example.com", forge.WithSecret(secret))
	for name, mw := range map[string]consumer.Middleware{
		"Retry":       consumer.Retry(nil),
		"same Dedupe": consumer.Dedupe(store, "a"),
	} {
		_, err := consumer.NewHandler(h, consumer.WithDedupe(store, "a"), consumer.WithVerifiedIDs(keyed),
			consumer.WithTimeout(time.Second), consumer.WithMiddleware(mw))
		if !errors.Is(err, consumer.ErrChainOrder) {
			t.Errorf("WithMiddleware(%s) with WithDedupe: %v, want ErrChainOrder", name, err)
		}
	}
}

// flakyComplete fails the first Complete it is asked for.
type flakyComplete struct {
	dedupe.Store
	failed atomic.Bool
}

func (s *flakyComplete) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	if s.failed.CompareAndSwap(false, true) {
		return errors.New("connection reset by peer")
	}
	return s.Store.Complete(ctx, c, retention)
}

// One failed Complete must not run the handler again: the completion is
// retried with the same claim while its lease lasts.
func TestCompleteFailureDoesNotRepeatTheEffect(t *testing.T) {
	mem := newMemory(t)
	store := &flakyComplete{Store: mem}
	var effects atomic.Int32
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		effects.Add(1)
		return nil
	}), consumer.WithDedupe(store, "billing"), consumer.WithLease(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p := consumer.Processor{Handler: h, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	m := msg()
	out, err := p.Process(context.Background(), context.Background(), m)
	if out != consumer.OutcomeAck || effects.Load() != 1 {
		t.Fatalf("outcome %v (%v), effects %d; want ack after exactly one effect", out, err, effects.Load())
	}
	if c, err := mem.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: m.ID}, 0); err != nil || c.Status != dedupe.Duplicate {
		t.Fatalf("claim after the delivery = %v, %v; want duplicate", c.Status, err)
	}
}

// logLines runs deliveries through a Processor with the log observer and
// returns the JSON log records.
func logRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// Every outcome is told apart in the logs, at an operator's level, and
// waiting for another holder's lease never counts attempts.
func TestLogOutcomes(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := newMemory(t)
	fail := errors.New("payment provider down")
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		switch string(m.Body) {
		case "fail":
			return fail
		case "flaky":
			if m.Attempt == 1 {
				return fail
			}
		}
		return nil
	}), consumer.WithDedupe(store, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := consumer.Apply("test", nil, []consumer.Option{consumer.WithLogger(logger), consumer.WithMaxAttempts(2), consumer.WithBackoff(time.Millisecond, 2*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	p := set.Processor(h)
	deliver := func(m *consumer.Message, stop context.Context) {
		ctx := p.Begin(context.Background(), m)
		out, err := p.Process(stop, ctx, m)
		p.End(ctx, m, out, err)
	}
	ok, flaky, bad := msg(), msg(), msg()
	flaky.Body, bad.Body = []byte("flaky"), []byte("fail")
	deliver(ok, context.Background())
	deliver(ok, context.Background()) // duplicate
	deliver(flaky, context.Background())
	deliver(bad, context.Background())

	// Held by someone else: waits (several times) until the lease ends.
	held := msg()
	if c, err := store.Claim(context.Background(), dedupe.Key{Scope: "billing", ID: held.ID}, 30*time.Millisecond); err != nil || !c.Acquired() {
		t.Fatal(c, err)
	}
	deliver(held, context.Background())

	// Abandoned at shutdown while waiting between attempts.
	stop, cancel := context.WithCancel(context.Background())
	aband := msg()
	aband.Body = []byte("fail")
	time.AfterFunc(time.Millisecond, cancel)
	set2, _ := consumer.Apply("test", nil, []consumer.Option{consumer.WithLogger(logger), consumer.WithBackoff(time.Hour, time.Hour)})
	p = set2.Processor(h)
	deliver(aband, stop)

	type want struct {
		level, msg string
		id         uuid.UUID
	}
	var got []want
	waits := 0
	for _, rec := range logRecords(t, &buf) {
		w := want{level: rec["level"].(string), msg: rec["msg"].(string), id: uuid.MustParse(rec[consumer.LogKeyMessageID].(string))}
		if w.msg == "message in flight elsewhere, waiting" {
			waits++
			if _, ok := rec["attempt"]; ok {
				t.Errorf("a wait for another holder's lease counted an attempt: %v", rec)
			}
			if waits > 1 {
				continue
			}
		}
		if a, ok := rec["attempt"].(float64); ok && a > 2 {
			t.Errorf("attempt %v past the maximum: %v", a, rec)
		}
		got = append(got, w)
	}
	wantSeq := []want{
		{"DEBUG", "message processed", ok.ID},
		{"DEBUG", "duplicate skipped", ok.ID},
		{"WARN", "handler failed, retrying", flaky.ID},
		{"DEBUG", "message processed", flaky.ID},
		{"WARN", "handler failed, retrying", bad.ID},
		{"ERROR", "message dead-lettered", bad.ID},
		{"INFO", "message in flight elsewhere, waiting", held.ID},
		{"DEBUG", "message processed", held.ID},
		{"WARN", "handler failed, retrying", aband.ID},
		{"INFO", "message returned to the broker", aband.ID},
	}
	if fmt.Sprint(got) != fmt.Sprint(wantSeq) {
		t.Fatalf("log lines:\n%v\nwant:\n%v\n%s", got, wantSeq, buf.String())
	}
}

func TestVerifyID(t *testing.T) {
	secret, err := forge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	gen := forge.MustNew("orders.example.com", forge.WithSecret(secret))
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New()}
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		msg    publisher.Message
		forged bool
	}{
		{"string key", context.Background(), publisher.Message{Type: "order.placed", Key: []any{"SO-1"}}, false},
		{"bytes key", context.Background(), publisher.Message{Type: "order.placed", Key: []any{[]byte{0, 1}}}, false},
		{"parts key", context.Background(), publisher.Message{Type: "order.placed", Key: []any{"EUR", 12345}}, false},
		{"one number", context.Background(), publisher.Message{Type: "order.placed", Key: []any{12345}}, false},
		{"body", context.Background(), publisher.Message{Type: "audit", Body: []byte("line")}, false},
		// Empty key bytes: the key was one empty part, or there was none.
		{"empty string key", context.Background(), publisher.Message{Type: "order.placed", Key: []any{""}, Body: []byte("b")}, false},
		{"empty bytes key", context.Background(), publisher.Message{Type: "order.placed", Key: []any{[]byte{}}, Body: []byte("b")}, false},
		{"caused", lineage.NewContext(context.Background(), parent), publisher.Message{Type: "payment.captured", Key: []any{"SO-1"}}, false},
		{"explicit ID", context.Background(), publisher.Message{Type: "order.placed", Key: []any{"SO-1"}, ID: uuid.New()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := publisher.IDs(tc.ctx, gen, &tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := publisher.KeyBytes(tc.msg.Key)
			m := &consumer.Message{ID: l.MessageID, CausationID: l.CausationID, Type: tc.msg.Type, Key: key, Body: tc.msg.Body}
			err = consumer.VerifyID(gen, m)
			if tc.forged != errors.Is(err, consumer.ErrForgedID) || (err != nil && !consumer.IsPermanent(err)) {
				t.Fatalf("VerifyID = %v, want forged: %v (permanent)", err, tc.forged)
			}
			// The same message under the public v5 scheme, or with another
			// body or type, does not verify.
			other := *m
			other.Type += "x"
			if consumer.VerifyID(gen, &other) == nil {
				t.Fatal("a changed type still verified")
			}
		})
	}
}

// A squatter who publishes the ID of a future legitimate message with another
// key is dead-lettered instead of making the real one a duplicate.
func TestVerifiedIDsStopSquatting(t *testing.T) {
	secret, _ := forge.NewSecret()
	gen := forge.MustNew("orders.example.com", forge.WithSecret(secret))
	store := newMemory(t)
	var handled []string
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(_ context.Context, m *consumer.Message) error {
		handled = append(handled, string(m.Body))
		return nil
	}), consumer.WithDedupe(store, "billing"), consumer.WithVerifiedIDs(gen))
	if err != nil {
		t.Fatal(err)
	}
	real := publisher.Message{Type: "order.placed", Key: []any{"SO-9"}, Body: []byte("real")}
	l, _ := publisher.IDs(context.Background(), gen, &real)
	squat := &consumer.Message{ID: l.MessageID, CorrelationID: l.MessageID, Type: "order.placed", Key: []byte("SO-1"), Body: []byte("squat")}
	p := consumer.Processor{Handler: h, MaxAttempts: 1}
	if out, err := p.Process(context.Background(), context.Background(), squat); out != consumer.OutcomeDeadLetter || !errors.Is(err, consumer.ErrForgedID) {
		t.Fatalf("squatting message: %v, %v; want the dead letter with ErrForgedID", out, err)
	}
	good := &consumer.Message{ID: l.MessageID, CorrelationID: l.MessageID, Type: "order.placed", Key: []byte("SO-9"), Body: []byte("real")}
	if out, err := p.Process(context.Background(), context.Background(), good); out != consumer.OutcomeAck || err != nil {
		t.Fatalf("real message: %v, %v", out, err)
	}
	if fmt.Sprint(handled) != "[real]" {
		t.Fatalf("handled %v, want only the real message", handled)
	}
}

func TestReason(t *testing.T) {
	short := errors.New("cannot parse")
	if consumer.Reason(short) != "cannot parse" {
		t.Fatal(consumer.Reason(short))
	}
	big := fmt.Errorf("cannot parse payload %q", strings.Repeat("é", 100_000))
	r := consumer.Reason(big)
	if len(r) > consumer.MaxReasonBytes || !utf8.ValidString(r) || !strings.HasPrefix(r, "cannot parse payload") {
		t.Fatalf("reason of %d bytes, valid UTF-8 %v", len(r), utf8.ValidString(r))
	}
	var cut int
	if _, err := fmt.Sscanf(r[strings.LastIndex(r, "[reason truncated: "):], "[reason truncated: %d more bytes]", &cut); err != nil {
		t.Fatalf("no truncation marker in %q", r[len(r)-60:])
	}
	if kept := len(r) - len(fmt.Sprintf("… [reason truncated: %d more bytes]", cut)); kept+cut != len(big.Error()) {
		t.Fatalf("kept %d + cut %d != %d", kept, cut, len(big.Error()))
	}
	if r := consumer.Reason(errors.New("bad \xff byte")); !utf8.ValidString(r) || !strings.Contains(r, `\xff`) {
		t.Fatalf("invalid UTF-8 reason %q", r)
	}
}

// TruncateReason keeps what fits, cuts at a rune boundary, says how much
// it cut, and gives up only when not even the marker fits.
func TestTruncateReason(t *testing.T) {
	reason := "x" + strings.Repeat("é", 300) // 601 bytes, a 2-byte rune at every odd offset
	for _, n := range []int{len(reason), len(reason) + 10, len(reason) - 1, 200, 201, 60} {
		got := consumer.TruncateReason(reason, n)
		if n >= len(reason) {
			if got != reason {
				t.Errorf("n %d: %q, want the reason unchanged", n, got)
			}
			continue
		}
		kept, marker, ok := strings.Cut(got, "… [reason truncated: ")
		var cut int
		if _, err := fmt.Sscanf(marker, "%d more bytes]", &cut); !ok || err != nil {
			t.Fatalf("n %d: no marker in %q", n, got)
		}
		if len(got) > n || !utf8.ValidString(got) || !strings.HasPrefix(reason, kept) || len(kept)+cut != len(reason) {
			t.Errorf("n %d: %d bytes %q (kept %d, cut %d of %d)", n, len(got), got, len(kept), cut, len(reason))
		}
	}
	if got := consumer.TruncateReason(reason, 10); got != "" {
		t.Errorf("no room for the marker: %q, want \"\"", got)
	}
}

func TestShutdownContexts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stop, work, release := consumer.ShutdownContexts(ctx, 20*time.Millisecond)
	defer release()
	cancel()
	<-stop.Done()
	if work.Err() != nil {
		t.Fatal("work ended with ctx; it must outlive it by the timeout")
	}
	select {
	case <-work.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("work outlived the shutdown timeout")
	}
	_, work2, release2 := consumer.ShutdownContexts(context.Background(), time.Hour)
	release2()
	if work2.Err() == nil {
		t.Fatal("release left work running")
	}
}

// The timeout is checked against the store's own default lease when the
// consumer sets none.
func TestTimeoutCheckedAgainstTheStoresLease(t *testing.T) {
	store, err := dedupe.NewMemory(dedupe.WithDefaultLease(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	if _, err := consumer.NewHandler(h, consumer.WithDedupe(store, "s"), consumer.WithTimeout(20*time.Second)); err == nil {
		t.Fatal("a 20 s timeout was accepted with the store's 5 s lease")
	}
	if _, err := consumer.NewHandler(h, consumer.WithDedupe(store, "s"), consumer.WithTimeout(2*time.Second)); err != nil {
		t.Fatal(err)
	}
}
