package rabbitsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
)

// broker is the test's own connection for declaring, publishing and
// inspecting queues.
type broker struct {
	url  string
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	url := testenv.AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &broker{url: url, conn: conn, ch: ch}
}

func (b *broker) queue(t *testing.T, prefix string) string {
	t.Helper()
	q := testenv.Name(t, prefix)
	if _, err := b.ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	return q
}

func (b *broker) publish(t *testing.T, q string, msgs ...amqp.Publishing) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	for _, m := range msgs {
		dc, err := b.ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish not confirmed: %v %v", ok, err)
		}
	}
}

// depth returns the ready messages of q (unacked ones are not counted).
func (b *broker) depth(t *testing.T, q string) int {
	t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st.Messages
}

func (b *broker) drain(t *testing.T, q string) []amqp.Delivery {
	t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// connDialer remembers the consumer's connections so a test can cut them.
type connDialer struct {
	url   string
	mu    sync.Mutex
	conns []*amqp.Connection
}

func (d *connDialer) dial(next rabbitsub.DialFunc) rabbitsub.DialFunc {
	return func(url string, cfg amqp.Config) (*amqp.Connection, error) {
		c, err := next(url, cfg)
		if err == nil {
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
		}
		return c, err
	}
}

func (d *connDialer) cut() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.conns)
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
	return n
}

type running = testsink.Running

func start(t *testing.T, c *rabbitsub.Consumer) *running {
	t.Helper()
	return testsink.Start(t, c.Run)
}

func chain(t *testing.T, store dedupe.Store, scope string, inner consumer.Handler, mws ...consumer.Middleware) consumer.Handler {
	t.Helper()
	return consumer.Chain(append([]consumer.Middleware{consumer.Lineage(), consumer.Dedupe(store, scope)}, append(mws, consumer.Recover())...)...)(inner)
}

func fast() []consumer.Option {
	return []consumer.Option{consumer.WithBackoff(5*time.Millisecond, 50*time.Millisecond), consumer.WithShutdownTimeout(10 * time.Second)}
}

// TestExactlyOnce: every message published three times, 20 % of handler
// calls failing and some panicking, the connection cut, the consumer stopped
// mid-batch and restarted — afterwards one row per message. Then a message
// published once is in its handler when the consumer stops and the shutdown
// timeout cancels it: it must be handed back and processed after the
// restart (a consumer that acked on receipt would lose it).
func TestExactlyOnce(t *testing.T) {
	for _, sc := range testsink.Stores() {
		t.Run(sc.Name, func(t *testing.T) {
			b := newBroker(t)
			q := b.queue(t, "q")
			sink := testsink.New(t, testsink.Pool(t))
			store := sc.New(t)
			chaos := &testsink.Chaos{FailRate: 0.2, PanicRate: 0.05, Seed: t.Name()}
			act := &testsink.Activity{}
			hang := &hangOnce{id: uuid.New(), started: make(chan struct{})}
			h := act.Wrap(chain(t, store, q, chaos.Wrap(sink), hang.middleware))
			const n = 60
			var msgs []amqp.Publishing
			for i := range n {
				msgs = append(msgs, amqp.Publishing{MessageId: uuid.NewString(), Type: "test", Body: []byte(fmt.Sprint(i))})
			}
			// three copies, interleaved
			b.publish(t, q, append(append(append([]amqp.Publishing{}, msgs...), msgs...), msgs...)...)

			d := &connDialer{url: b.url}
			opts := append(fast(), rabbitsub.WithWorkers(4), rabbitsub.WithPrefetch(8), consumer.WithMaxAttempts(100),
				consumer.WithShutdownTimeout(500*time.Millisecond))
			c, err := rabbitsub.New(d.url, q, h, append(opts, rabbitsub.WithDial(d.dial))...)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, c)
			waitRows(t, sink, n/4)
			if d.cut() == 0 { // connection loss: the consumer reconnects
				t.Fatal("no connection to cut")
			}
			waitRows(t, sink, n/2)
			r.Stop(t) // mid-batch
			mid := sink.Count(t)
			r = start(t, c)
			sink.WaitCount(t, n, 40*time.Second)
			waitEmpty(t, b, q)

			// Stopped while a handler runs past the shutdown timeout.
			b.publish(t, q, amqp.Publishing{MessageId: hang.id.String(), Type: "test", Body: []byte("hang")})
			select {
			case <-hang.started:
			case <-time.After(20 * time.Second):
				t.Fatal("the last message was not delivered")
			}
			r.Stop(t)
			r = start(t, c)
			sink.WaitCount(t, n+1, 40*time.Second)
			waitEmpty(t, b, q)
			act.WaitQuiet(t, 300*time.Millisecond, 20*time.Second)
			r.Stop(t)
			if got := b.depth(t, q); got != 0 {
				t.Fatalf("%d messages left in the queue", got)
			}
			if sink.Dups() != 0 {
				t.Fatalf("%d duplicate effects", sink.Dups())
			}
			failed, panicked := chaos.Injected()
			if failed == 0 || panicked == 0 {
				t.Fatalf("chaos injected %d failures and %d panics; the test did not exercise them", failed, panicked)
			}
			t.Logf("rows at stop %d; handler calls %d; injected failures %d, panics %d", mid, sink.Calls(), failed, panicked)
		})
	}
}

// hangOnce makes the first delivery of message id wait in its handler until
// its context is cancelled.
type hangOnce struct {
	id      uuid.UUID
	once    sync.Once
	started chan struct{}
}

func (h *hangOnce) middleware(next consumer.Handler) consumer.Handler {
	return consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		first := false
		if m.ID == h.id {
			h.once.Do(func() { first = true })
		}
		if first {
			close(h.started)
			<-ctx.Done()
			return ctx.Err()
		}
		return next.Handle(ctx, m)
	})
}

func waitRows(t *testing.T, s *testsink.Sink, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Count(t) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d rows after 30s", atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestContentIDsFromPika: a producer that sets no IDs (python3-pika), each
// message published twice, is processed once per message via content IDs.
func TestContentIDsFromPika(t *testing.T) {
	py := testenv.Python(t)
	b := newBroker(t)
	q := b.queue(t, "pika")
	sink := testsink.New(t, testsink.Pool(t))
	const script = `
import sys, pika
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = conn.channel()
ch.confirm_delivery()
for rnd in range(2):
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=sys.argv[2], body=("pika message %d" % i).encode())
conn.close()
`
	if out, err := exec.Command(py, "-c", script, b.url, q).CombinedOutput(); err != nil {
		t.Fatalf("pika: %v\n%s", err, out)
	}
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, sink), fast()...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	sink.WaitCount(t, 5, 20*time.Second)
	waitEmpty(t, b, q)
	r.Stop(t)
	if sink.Count(t) != 5 || sink.Dups() != 0 {
		t.Fatalf("%d rows, %d duplicate effects; want 5 and 0", sink.Count(t), sink.Dups())
	}
}

func waitEmpty(t *testing.T, b *broker, q string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, q) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queue %s not drained", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeadLetter: malformed IDs, missing IDs under MissingIDDeadLetter and
// permanently failing messages end in the dead-letter queue with a reason,
// without blocking the messages behind them.
func TestDeadLetter(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	sink := testsink.New(t, testsink.Pool(t))
	poison := uuid.NewString()
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.ID.String() == poison {
			return errors.New("always fails")
		}
		return sink.Handle(ctx, m)
	})
	good := uuid.NewString()
	b.publish(t, q,
		amqp.Publishing{MessageId: "not-a-uuid", Body: []byte("malformed")},
		amqp.Publishing{MessageId: uuid.NewString(), CorrelationId: "bad-correlation", Body: []byte("malformed correlation")},
		amqp.Publishing{Body: []byte("no id")},
		amqp.Publishing{MessageId: poison, Body: []byte("poison")},
		amqp.Publishing{MessageId: good, Body: []byte("good")},
	)
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, h),
		append(fast(), rabbitsub.WithDeadLetterQueue(dlq), consumer.WithMissingID(consumer.MissingIDDeadLetter), consumer.WithMaxAttempts(3))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	sink.WaitCount(t, 1, 20*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, dlq) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	waitEmpty(t, b, q)
	r.Stop(t)
	got := map[string]string{}
	for _, d := range b.drain(t, dlq) {
		reason, _ := d.Headers[consumer.HeaderDeadLetterReason].(string)
		got[string(d.Body)] = reason
		if d.Headers[consumer.HeaderOriginalQueue] != q {
			t.Errorf("%s: original queue header %v", d.Body, d.Headers[consumer.HeaderOriginalQueue])
		}
	}
	for body, want := range map[string]string{
		"malformed":             "malformed ID",
		"malformed correlation": "correlation ID",
		"no id":                 "no ID",
		"poison":                "always fails",
	} {
		if !strings.Contains(got[body], want) {
			t.Errorf("dead letter of %q: reason %q, want it to mention %q", body, got[body], want)
		}
	}
	if len(got) != 4 || !sink.Has(t, uuid.MustParse(good)) {
		t.Fatalf("dead letters %v; good message processed: %v", got, sink.Has(t, uuid.MustParse(good)))
	}
}

// TestStoreOutage: while the dedupe store is unreachable nothing is acked
// or dead-lettered and no effect happens; when it returns every message is
// processed once.
func TestStoreOutage(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	sink := testsink.New(t, testsink.Pool(t))
	store, proxy := testsink.RedisBehindProxy(t)
	proxy.SetDown(true)
	const n = 10
	for range n {
		b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
	}
	c, err := rabbitsub.New(b.url, q, chain(t, store, q, sink),
		append(fast(), rabbitsub.WithDeadLetterQueue(dlq), consumer.WithMaxAttempts(2), rabbitsub.WithWorkers(2), rabbitsub.WithPrefetch(4))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	deadline := time.Now().Add(10 * time.Second)
	for proxy.Refused() < 20 && time.Now().Before(deadline) { // well past MaxAttempts
		time.Sleep(10 * time.Millisecond)
	}
	if proxy.Refused() < 20 {
		t.Fatal("the consumer did not try the store")
	}
	if got := b.depth(t, q); got != n-4 { // 4 held unacked by the prefetch window
		t.Fatalf("%d messages ready during the outage, want %d", got, n-4)
	}
	if sink.Count(t) != 0 || b.depth(t, dlq) != 0 {
		t.Fatal("work done or dead-lettered during the store outage")
	}
	proxy.SetDown(false)
	sink.WaitCount(t, n, 20*time.Second)
	waitEmpty(t, b, q)
	r.Stop(t)
	if b.depth(t, q) != 0 || b.depth(t, dlq) != 0 || sink.Dups() != 0 {
		t.Fatal("messages left, dead-lettered or duplicated after the outage")
	}
}

func TestNewValidates(t *testing.T) {
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	d := "amqp://localhost/"
	for name, opts := range map[string][]consumer.Option{
		"no workers":          {rabbitsub.WithWorkers(0)},
		"prefetch < workers":  {rabbitsub.WithWorkers(8), rabbitsub.WithPrefetch(2)},
		"negative attempts":   {consumer.WithMaxAttempts(-1)},
		"bad policy":          {consumer.WithMissingID(consumer.MissingIDPolicy(9))},
		"backoff min > max":   {consumer.WithBackoff(time.Second, time.Millisecond)},
		"exchange and queue":  {rabbitsub.WithDeadLetterExchange("dlx", "k"), rabbitsub.WithDeadLetterQueue("dlq")},
		"queue and reject":    {rabbitsub.WithDeadLetterQueue("dlq"), rabbitsub.WithQueueDeadLetterExchange()},
		"reject and exchange": {rabbitsub.WithQueueDeadLetterExchange(), rabbitsub.WithDeadLetterExchange("dlx", "k")},
	} {
		if _, err := rabbitsub.New(d, "q", h, opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := rabbitsub.New(d, "", h); err == nil {
		t.Error("empty queue accepted")
	}
	for name, opts := range map[string][]consumer.Option{
		"defaults":       nil,
		"exchange twice": {rabbitsub.WithDeadLetterExchange("a", "k"), rabbitsub.WithDeadLetterExchange("b", "k")},
		"queue twice":    {rabbitsub.WithDeadLetterQueue("a"), rabbitsub.WithDeadLetterQueue("b")},
		"reject twice":   {rabbitsub.WithQueueDeadLetterExchange(), rabbitsub.WithQueueDeadLetterExchange()},
	} {
		if _, err := rabbitsub.New(d, "q", h, opts...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestInbox: with the PostgreSQL store as a transactional inbox, a handler
// that fails after writing leaves no row; its retry writes the row once; a
// message that always fails after writing ends in the dead letter with no
// row at all.
func TestInbox(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	sink := testsink.New(t, testsink.Pool(t))
	poison := uuid.New()
	sink.FailAfterWrite = func(m *consumer.Message) bool { return m.Attempt == 1 || m.ID == poison }
	store := testsink.Postgres(t)
	if _, ok := store.(dedupe.Inbox); !ok {
		t.Fatal("the PostgreSQL store is not an Inbox")
	}
	const n = 20
	for range n {
		b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
	}
	b.publish(t, q, amqp.Publishing{MessageId: poison.String(), Body: []byte("poison")})
	c, err := rabbitsub.New(b.url, q, chain(t, store, q, sink),
		append(fast(), rabbitsub.WithDeadLetterQueue(dlq), consumer.WithMaxAttempts(3))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	sink.WaitCount(t, n, 20*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, dlq) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop(t)
	if sink.Has(t, poison) || b.depth(t, dlq) != 1 {
		t.Fatalf("poison row present: %v; dead letters: %d", sink.Has(t, poison), b.depth(t, dlq))
	}
	if sink.Dups() != 0 || sink.Calls() < 2*n+3 {
		t.Fatalf("%d duplicate effects (a failed attempt's write survived) after %d handler calls", sink.Dups(), sink.Calls())
	}
}

// TestGracefulShutdown: Run returns only after the handler in progress
// finished and its message was acked; prefetched messages not started go
// back to the queue untouched. A batch in progress is finished with it,
// and the deliveries not in it go back. A handler still running when the
// shutdown timeout expires is cancelled and its message goes back too:
// nothing is acked that was not processed.
func TestGracefulShutdown(t *testing.T) {
	t.Run("handler finishes", func(t *testing.T) {
		b := newBroker(t)
		q := b.queue(t, "q")
		sink := testsink.New(t, testsink.Pool(t))
		const n = 5
		for range n {
			b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
		}
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			once.Do(func() { close(started) })
			<-release
			return sink.Handle(ctx, m)
		})
		// One delivery at a time: which deliveries share a batch depends on
		// when they arrive ("batch in progress finishes" below).
		c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, h),
			append(fast(), rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(1))...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		<-started
		cancel()
		select {
		case err := <-done:
			t.Fatalf("Run returned (%v) while a handler was running", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
		}
		if sink.Count(t) != 1 {
			t.Fatalf("%d rows, want exactly the one in progress", sink.Count(t))
		}
		deadline := time.Now().Add(10 * time.Second)
		for b.depth(t, q) != n-1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := b.depth(t, q); got != n-1 {
			t.Fatalf("%d messages back in the queue, want %d (the finished one acked, the rest returned)", got, n-1)
		}
	})
	t.Run("batch in progress finishes", func(t *testing.T) {
		b := newBroker(t)
		q := b.queue(t, "q")
		const n, batch = 8, 3
		for range n {
			b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
		}
		sink := testsink.New(t, testsink.Pool(t))
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			once.Do(func() { close(started) })
			<-release
			return sink.Handle(ctx, m)
		})
		c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, h),
			append(fast(), rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), rabbitsub.WithBatchSize(batch))...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		<-started
		cancel()
		select {
		case err := <-done:
			t.Fatalf("Run returned (%v) while a handler was running", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
		}
		rows := sink.Count(t)
		if rows < 1 || rows > batch || int64(rows) != sink.Calls() {
			t.Fatalf("%d rows after %d handler calls, want the batch in progress (1 to %d messages), each finished", rows, sink.Calls(), batch)
		}
		deadline := time.Now().Add(10 * time.Second)
		for b.depth(t, q) != n-rows && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := b.depth(t, q); got != n-rows {
			t.Fatalf("%d messages back in the queue, want %d (the batch acked, the rest returned)", got, n-rows)
		}
	})
	t.Run("shutdown timeout expires", func(t *testing.T) {
		b := newBroker(t)
		q := b.queue(t, "q")
		const n = 3
		for range n {
			b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
		}
		started := make(chan struct{}, n)
		h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		})
		c, err := rabbitsub.New(b.url, q, h, consumer.WithShutdownTimeout(200*time.Millisecond),
			rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(n), consumer.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		r := start(t, c)
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("handler not called")
		}
		r.Stop(t)
		deadline := time.Now().Add(10 * time.Second)
		for b.depth(t, q) != n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := b.depth(t, q); got != n {
			t.Fatalf("%d of %d messages back in the queue: the cancelled one was acked", got, n)
		}
	})
}

// TestMissingQueue: a queue that does not exist at the first connection is a
// configuration error that Run returns instead of retrying forever.
func TestMissingQueue(t *testing.T) {
	url := testenv.AMQPURL(t)
	c, err := rabbitsub.New(url, testenv.Name(t, "absent"),
		consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }), fast()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 10*time.Second)
	if err := c.Run(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Run on a missing queue: %v (ctx %v)", err, ctx.Err())
	}
}

// TestQueueDeadLetterExchange: without a dead-letter option, a message for
// the dead letter is rejected without requeue, so the queue's own
// x-dead-letter-exchange receives it.
func TestQueueDeadLetterExchange(t *testing.T) {
	b := newBroker(t)
	dlq := b.queue(t, "dlq")
	q := testenv.Name(t, "q")
	if _, err := b.ch.QueueDeclare(q, false, false, false, false, amqp.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	sink := testsink.New(t, testsink.Pool(t))
	good := uuid.NewString()
	b.publish(t, q, amqp.Publishing{MessageId: "garbage", Body: []byte("bad")}, amqp.Publishing{MessageId: good, Body: []byte("good")})
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, sink),
		append(fast(), rabbitsub.WithQueueDeadLetterExchange())...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	sink.WaitCount(t, 1, 20*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, dlq) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop(t)
	dead := b.drain(t, dlq)
	if len(dead) != 1 || string(dead[0].Body) != "bad" || dead[0].Headers["x-death"] == nil {
		t.Fatalf("dead letters %v", dead)
	}
	if !sink.Has(t, uuid.MustParse(good)) || b.depth(t, q) != 0 {
		t.Fatal("the good message was not processed or the queue not drained")
	}
}

// TestLineageAndDeadLetterExchange: the IDs and type travel in the native
// properties and the causation header and reach the handler's context;
// dead letters go to a configured exchange.
func TestLineageAndDeadLetterExchange(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	ex := testenv.Name(t, "dlx")
	if err := b.ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.ch.QueueBind(dlq, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	id, corr, cause := uuid.New(), uuid.New(), uuid.New()
	got := make(chan lineage.Lineage, 1)
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		if m.Type == "poison" {
			return consumer.Permanent(errors.New("rejected by the handler"))
		}
		l, _ := lineage.FromContext(ctx)
		got <- l
		return nil
	})
	b.publish(t, q,
		amqp.Publishing{MessageId: uuid.NewString(), Type: "poison", Body: []byte("p")},
		amqp.Publishing{MessageId: id.String(), CorrelationId: corr.String(), Type: "order.created",
			Headers: amqp.Table{lineage.HeaderCausationID: cause.String(), "tenant": int32(7)}, Body: []byte("x")})
	g, err := forge.New("tests.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, h),
		append(fast(), rabbitsub.WithDeadLetterExchange(ex, "any"), consumer.WithGenerator(g),
			rabbitsub.WithConsumerTag(testenv.Name(t, "tag")), consumer.WithLogger(slog.New(slog.DiscardHandler)))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	select {
	case l := <-got:
		want := lineage.Lineage{MessageID: id, CorrelationID: corr, CausationID: cause, Type: "order.created"}
		if l != want {
			t.Fatalf("lineage %+v, want %+v", l, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("message not handled")
	}
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, dlq) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop(t)
	dead := b.drain(t, dlq)
	if len(dead) != 1 || dead[0].Type != "poison" || !strings.Contains(fmt.Sprint(dead[0].Headers[consumer.HeaderDeadLetterReason]), "rejected by the handler") {
		t.Fatalf("dead letters %+v", dead)
	}
}

// A dead letter that its exchange routes to no queue must not be taken as
// stored: the original stays in its queue (unacked, then requeued) instead of
// being acked into nowhere. Once the exchange gets a binding, it is delivered.
func TestUnroutableDeadLetterIsNotAcked(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	ex := testenv.Name(t, "dlx")
	if err := b.ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		return consumer.Permanent(errors.New("rejected by the handler"))
	})
	b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Type: "poison", Body: []byte("p")})
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q, h),
		append(fast(), rabbitsub.WithDeadLetterExchange(ex, "any"),
			consumer.WithLogger(slog.New(slog.DiscardHandler)))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	// Let the consumer try (and fail) to dead-letter a few times.
	time.Sleep(1500 * time.Millisecond)
	r.Stop(t)
	if n := b.depth(t, q); n != 1 {
		t.Fatalf("queue depth after unroutable dead letters = %d, want the message back in its queue", n)
	}
	if n := b.depth(t, dlq); n != 0 {
		t.Fatalf("dead-letter queue has %d messages before any binding", n)
	}

	if err := b.ch.QueueBind(dlq, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	r = start(t, c)
	deadline := time.Now().Add(20 * time.Second)
	for b.depth(t, dlq) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop(t)
	if dead := b.drain(t, dlq); len(dead) != 1 {
		t.Fatalf("dead letters after binding = %d, want 1", len(dead))
	}
	if n := b.depth(t, q); n != 0 {
		t.Fatalf("queue depth after the dead letter was stored = %d, want 0", n)
	}
}

// With no dead-letter option, a dead letter goes to the declared queue
// "<queue>.dead-letter" with its reason, never to a reject the broker may drop.
func TestDefaultDeadLetterQueue(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	b.publish(t, q, amqp.Publishing{MessageId: "not-a-uuid", Body: []byte("bad")})
	c, err := rabbitsub.New(b.url, q, chain(t, testsink.Memory(t), q,
		consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })),
		append(fast(), consumer.WithLogger(slog.New(slog.DiscardHandler)))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	// Graceful stop lets the in-flight dead-lettering finish: the original
	// is acked only after its dead letter was confirmed.
	waitEmpty(t, b, q)
	dlq := q + consumer.DeadLetterSuffix
	r.Stop(t)
	dead := b.drain(t, dlq)
	if len(dead) != 1 || string(dead[0].Body) != "bad" || !strings.Contains(fmt.Sprint(dead[0].Headers[consumer.HeaderDeadLetterReason]), "not-a-uuid") {
		t.Fatalf("dead letters in %s: %+v", dlq, dead)
	}
	if n := b.depth(t, q); n != 0 {
		t.Fatalf("queue depth %d after dead-lettering, want 0", n)
	}
}
