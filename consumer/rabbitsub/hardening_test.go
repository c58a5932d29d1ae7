package rabbitsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// dialCounter counts the consumer's connections: every dial after the
// first is a reconnect.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) dial(next rabbitsub.DialFunc) rabbitsub.DialFunc {
	return func(url string, cfg amqp.Config) (*amqp.Connection, error) {
		d.n.Add(1)
		return next(url, cfg)
	}
}

// handled records the IDs a handler saw.
type handled struct {
	mu  sync.Mutex
	ids map[string]int
}

func (h *handled) handler(ctx context.Context, m *consumer.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids == nil {
		h.ids = map[string]int{}
	}
	h.ids[m.ID.String()]++
	return nil
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ids)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count returns the ready messages of q, 0 while q does not exist.
func (b *broker) count(t *testing.T, q string) int {
	t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		return 0
	}
	return st.Messages
}

func normal(n int) ([]amqp.Publishing, []string) {
	var msgs []amqp.Publishing
	var ids []string
	for i := range n {
		id := uuid.NewString()
		ids = append(ids, id)
		msgs = append(msgs, amqp.Publishing{MessageId: id, Body: []byte(fmt.Sprint("normal ", i))})
	}
	return msgs, ids
}

// A dead letter whose headers do not fit in a frame: the original's header
// of 130 880 bytes plus the dead-letter headers exceed frame_max. The
// broker must store the dead letter at once, on the first connection, and
// the messages behind it must be handled without a reconnect.
func TestOversizedDeadLetterIsStored(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	big := strings.Repeat("h", 130880)
	b.publish(t, q, amqp.Publishing{MessageId: "not-a-uuid", Headers: amqp.Table{"h": big}, Body: []byte("bad")})
	msgs, _ := normal(20)
	b.publish(t, q, msgs...)
	var h handled
	dials := &dialCounter{}
	c, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler),
		append(fast(), rabbitsub.WithDial(dials.dial), consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	dlq := q + consumer.DeadLetterSuffix
	deadline := time.Now().Add(20 * time.Second)
	for (b.count(t, dlq) != 1 || h.count() != 20) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if b.count(t, dlq) != 1 || h.count() != 20 {
		t.Fatalf("after 20s: %d dead letters, %d of 20 messages handled, %d connections", b.count(t, dlq), h.count(), dials.n.Load())
	}
	r.Stop(t)
	if n := dials.n.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (no reconnect)", n)
	}
	if n := b.depth(t, q); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
	dead := b.drain(t, dlq)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters", len(dead))
	}
	dl, err := rabbitsub.ParseDeadLetter(dead[0])
	if err != nil {
		t.Fatal(err)
	}
	if !dl.Envelope || dl.Message.Headers["h"] != big || string(dl.Message.Body) != "bad" || dl.Message.MessageId != "not-a-uuid" {
		t.Errorf("dead letter: envelope %v, header h of %d bytes, body %q, message ID %q",
			dl.Envelope, len(fmt.Sprint(dl.Message.Headers["h"])), dl.Message.Body, dl.Message.MessageId)
	}
	if !strings.Contains(dl.Reason, "not-a-uuid") || dl.Queue != q {
		t.Errorf("dead letter reason %q, queue %q", dl.Reason, dl.Queue)
	}
}

// A Permanent error that quotes a 200 000-byte body: the reason is
// truncated with a marker, the dead letter is stored on the first
// connection and the handler runs once.
func TestHugeReasonIsTruncated(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	body := []byte(strings.Repeat("x", 200000))
	b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: body})
	var calls atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		return consumer.Permanent(fmt.Errorf("cannot parse payload %q", m.Body))
	})
	dials := &dialCounter{}
	c, err := rabbitsub.New(b.url, q, h, append(fast(), rabbitsub.WithDial(dials.dial), consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	dlq := q + consumer.DeadLetterSuffix
	waitFor(t, 20*time.Second, "the dead letter was not stored", func() bool { return b.count(t, dlq) == 1 })
	r.Stop(t)
	if calls.Load() != 1 || dials.n.Load() != 1 {
		t.Errorf("%d handler calls and %d connections, want 1 and 1", calls.Load(), dials.n.Load())
	}
	dead := b.drain(t, dlq)
	reason := fmt.Sprint(dead[0].Headers[consumer.HeaderDeadLetterReason])
	if len(reason) > consumer.MaxReasonBytes || !strings.Contains(reason, "reason truncated") {
		t.Errorf("reason of %d bytes: %.80q…", len(reason), reason)
	}
	if len(dead[0].Body) != len(body) {
		t.Errorf("dead letter body of %d bytes, want %d", len(dead[0].Body), len(body))
	}
}

// nested returns a table nested depth levels below its top.
func nested(depth int) amqp.Table {
	t := amqp.Table{"leaf": "x"}
	for range depth - 1 {
		t = amqp.Table{"n": t}
	}
	return amqp.Table{"n": t}
}

// poisons are header tables RabbitMQ accepts and amqp091-go cannot read: it
// closes its connection when a message with one arrives.
func poisons(t *testing.T, frameMax int) map[string]amqp.Table {
	t.Helper()
	many := amqp.Table{}
	for i := range 8193 {
		many[strconv.Itoa(i)] = true
	}
	// A content header of frame_max+4 bytes: RabbitMQ compares its payload
	// (8 bytes less) with frame_max, amqp091-go compares the whole frame.
	near := amqp.Publishing{MessageId: uuid.NewString(), Headers: amqp.Table{"pad": ""}, Body: []byte("poison")}
	size, err := rabbitmq.HeaderFrameSize(&near)
	if err != nil {
		t.Fatal(err)
	}
	near.Headers["pad"] = strings.Repeat("p", frameMax-size+4)
	return map[string]amqp.Table{
		"8193 headers":          many,
		"depth 33":              nested(33),
		"header near frame_max": near.Headers,
	}
}

// quorumTopology declares q as a quorum queue with a delivery limit whose
// dead letters, the broker's and the consumer's, go to the quorum queue
// "<q>.dead-letter".
func quorumTopology(q string, limit int) rabbitmq.Topology {
	dlq := q + consumer.DeadLetterSuffix
	return rabbitmq.Topology{Queues: []rabbitmq.Queue{
		{Name: dlq, Type: rabbitmq.Quorum},
		{Name: q, Type: rabbitmq.Quorum, DeliveryLimit: limit, DeadLetterExchange: "", DeadLetterRoutingKey: dlq},
	}}
}

// queueOfType declares q as a classic queue or as a quorum queue with a
// delivery limit of 3 (returning the topology the consumer declares too).
func (b *broker) queueOfType(t *testing.T, kind rabbitmq.QueueType) (string, []consumer.Option) {
	t.Helper()
	if kind == rabbitmq.Classic {
		return b.queue(t, "q"), nil
	}
	q := testenv.Name(t, "q")
	topo := quorumTopology(q, 3)
	ch, err := b.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := topo.Declare(ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	return q, []consumer.Option{rabbitsub.WithTopology(topo)}
}

// A message whose headers the AMQP client cannot read, at the head of a
// queue with a message its handler rejects and 20 normal messages behind
// it, on classic and quorum queues: the consumer keeps working on its first
// connection, the 20 are handled, and both others end up in the dead
// letter with their reasons — the unreadable one in an envelope that holds
// its headers as received.
func TestPoisonHeaders(t *testing.T) {
	for _, kind := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		for name, headers := range poisons(t, rabbitmq.DefaultFrameMax) {
			t.Run(string(kind)+"/"+name, func(t *testing.T) {
				b := newBroker(t)
				q, opts := b.queueOfType(t, kind)
				poisonID, rejectedID := uuid.NewString(), uuid.NewString()
				b.publish(t, q,
					amqp.Publishing{MessageId: poisonID, Headers: headers, Body: []byte("poison")},
					amqp.Publishing{MessageId: rejectedID, Body: []byte("rejected")})
				msgs, _ := normal(20)
				b.publish(t, q, msgs...)
				var h handled
				handler := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
					if m.ID.String() == rejectedID {
						return consumer.Permanent(errors.New("rejected by the handler"))
					}
					return h.handler(ctx, m)
				})
				dials := &dialCounter{}
				c, err := rabbitsub.New(b.url, q, handler,
					append(append(fast(), opts...), rabbitsub.WithDial(dials.dial), consumer.WithLogger(discard()))...)
				if err != nil {
					t.Fatal(err)
				}
				r := start(t, c)
				dlq := q + consumer.DeadLetterSuffix
				deadline := time.Now().Add(10 * time.Second)
				for (h.count() < 20 || b.count(t, dlq) < 2) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				r.Stop(t)
				if h.count() != 20 || b.count(t, dlq) != 2 || dials.n.Load() != 1 {
					t.Fatalf("%d of 20 handled, %d dead letters, %d connections; want 20, 2, 1", h.count(), b.count(t, dlq), dials.n.Load())
				}
				if n := b.count(t, q); n != 0 {
					t.Fatalf("%d messages left in the queue", n)
				}
				for _, d := range b.drain(t, dlq) {
					dl, err := rabbitsub.ParseDeadLetter(d)
					if err != nil {
						t.Fatal(err)
					}
					switch dl.Message.MessageId {
					case rejectedID:
						if !strings.Contains(dl.Reason, "rejected by the handler") || dl.Envelope || dl.Attempts != 1 {
							t.Errorf("rejected message: %+v", dl)
						}
					case poisonID:
						if !dl.Envelope || !strings.Contains(dl.Reason, "headers unreadable by the AMQP client") || dl.Queue != q ||
							string(dl.Message.Body) != "poison" || len(dl.Message.Headers) != len(headers) || dl.Attempts != 0 {
							t.Errorf("poison message: envelope %v, reason %q, queue %q, body %q, %d headers (want %d), attempts %d",
								dl.Envelope, dl.Reason, dl.Queue, dl.Message.Body, len(dl.Message.Headers), len(headers), dl.Attempts)
						}
					default:
						t.Errorf("unexpected dead letter %q", dl.Message.MessageId)
					}
				}
			})
		}
	}
}

// Without the guard, a poison message closes the client's connection on
// every delivery. The consumer must not reconnect in a tight loop: its
// backoff grows (it is reset only after progress), it logs at ERROR, and it
// consumes one message at a time, so that on a quorum queue with a
// delivery limit the broker dead-letters the poison message alone and the
// 20 normal messages behind it are handled.
func TestPoisonWithoutGuard(t *testing.T) {
	for _, kind := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(kind), func(t *testing.T) {
			b := newBroker(t)
			q, opts := b.queueOfType(t, kind)
			b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Headers: nested(33), Body: []byte("poison")})
			msgs, _ := normal(20)
			b.publish(t, q, msgs...)
			var h handled
			dials := &dialCounter{}
			var logs strings.Builder
			var mu sync.Mutex
			c, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler),
				append(opts, rabbitsub.WithoutGuard(), rabbitsub.WithDial(dials.dial), consumer.WithBackoff(50*time.Millisecond, time.Second),
					consumer.WithShutdownTimeout(5*time.Second), consumer.WithLogger(textLogger(&mu, &logs)))...)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, c)
			dlq := q + consumer.DeadLetterSuffix
			if kind == rabbitmq.Quorum {
				waitFor(t, 20*time.Second, "the normal messages were not handled", func() bool { return h.count() == 20 })
				// Back to the full prefetch window once a window's worth of
				// deliveries succeeded one at a time.
				more, _ := normal(rabbitsub.DefaultPrefetch + 4)
				b.publish(t, q, more...)
				waitFor(t, 20*time.Second, "the later messages were not handled", func() bool { return h.count() == 20+len(more) })
				ctl := testenv.Tool(t, "rabbitmqctl")
				waitFor(t, 20*time.Second, "the consumer did not return to its full prefetch window", func() bool {
					out, err := exec.Command(ctl, "list_consumers", "-q", "--no-table-headers", "queue_name", "prefetch_count").Output()
					return err == nil && strings.Contains(string(out), q+"\t"+strconv.Itoa(rabbitsub.DefaultPrefetch)+"\n")
				})
				r.Stop(t)
				if n := b.count(t, dlq); n != 1 {
					t.Errorf("%d dead letters, want the poison message alone", n)
				}
				t.Logf("%d connections", dials.n.Load())
				return
			}
			time.Sleep(5 * time.Second)
			r.Stop(t)
			mu.Lock()
			defer mu.Unlock()
			if n := dials.n.Load(); n > 15 {
				t.Errorf("%d connections in 5 s with backoff from 50 ms to 1 s", n)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "frame it cannot read") {
				t.Errorf("no ERROR log about the unreadable frame:\n%s", logs.String())
			}
			t.Logf("%d connections, %d of 20 handled", dials.n.Load(), h.count())
		})
	}
}

// A dead letter the broker refuses (its exchange does not exist: the broker
// closes the channel) is retried in place, with backoff, on a new channel:
// no reconnect, no second run of the handler. Once the exchange exists, the
// dead letter is stored and the original acked.
func TestRefusedDeadLetterIsRetriedInPlace(t *testing.T) {
	b := newBroker(t)
	q, dlq := b.queue(t, "q"), b.queue(t, "dlq")
	ex := testenv.Name(t, "dlx")
	var calls atomic.Int64
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		return consumer.Permanent(errors.New("rejected by the handler"))
	})
	b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("p")})
	dials := &dialCounter{}
	c, err := rabbitsub.New(b.url, q, h, append(fast(), rabbitsub.WithDeadLetterExchange(ex, "any"),
		rabbitsub.WithDial(dials.dial), consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	time.Sleep(2 * time.Second)
	if calls.Load() != 1 || dials.n.Load() != 1 {
		t.Fatalf("%d handler calls and %d connections while the exchange is missing, want 1 and 1", calls.Load(), dials.n.Load())
	}
	if err := b.ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.ch.QueueBind(dlq, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the dead letter was not stored", func() bool { return b.count(t, dlq) == 1 })
	r.Stop(t)
	if n := b.count(t, q); n != 0 || calls.Load() != 1 {
		t.Fatalf("%d messages left, %d handler calls", n, calls.Load())
	}
}

// A message with a user-id property is dead-lettered as an envelope (the
// broker would refuse a copy published by another user) that keeps it.
func TestUserIDDeadLetter(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	b.publish(t, q, amqp.Publishing{MessageId: "not-a-uuid", UserId: "guest", Body: []byte("bad")})
	c, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }),
		append(fast(), consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	dlq := q + consumer.DeadLetterSuffix
	waitFor(t, 20*time.Second, "the dead letter was not stored", func() bool { return b.count(t, dlq) == 1 })
	r.Stop(t)
	dl, err := rabbitsub.ParseDeadLetter(b.drain(t, dlq)[0])
	if err != nil || !dl.Envelope || dl.Message.UserId != "guest" || string(dl.Message.Body) != "bad" {
		t.Fatalf("dead letter %+v (%v)", dl, err)
	}
}

// No password in logs: a consumer that cannot reach its broker logs its
// reconnects without the password.
func TestNoPasswordInLogs(t *testing.T) {
	const secret = "s3cret-pw"
	var logs strings.Builder
	var mu sync.Mutex
	for _, url := range []string{
		"amqp://user:" + secret + "@127.0.0.1:1/",
		"amqp://user:" + secret + "@127.0.0.1:5672/?auth_mechanism=bogus",
	} {
		c, err := rabbitsub.New(url, "q", consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }),
			append(fast(), consumer.WithLogger(textLogger(&mu, &logs)))...)
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("New(%s) error shows the password: %v", url, err)
			}
			continue
		}
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if s := fmt.Sprintf(verb, c); strings.Contains(s, secret) {
				t.Errorf("%s of the consumer shows the password: %s", verb, s)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = c.Run(ctx)
		cancel()
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Run error shows the password: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), secret) {
		t.Errorf("logs show the password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "xxxxx") && !strings.Contains(logs.String(), "127.0.0.1:1") {
		t.Errorf("logs do not name the broker:\n%s", logs.String())
	}
}

// A URL that can never be dialled is an error from New, without the
// password.
func TestBadURLIsAnErrorFromNew(t *testing.T) {
	const secret = "s3cret-pw"
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	for _, url := range []string{
		"amqp://user:" + secret + "@127.0.0.1:5672/%zz",
		"amqp://user:PA#" + secret + "@127.0.0.1:5672/",
		"amqp://user:" + secret + "@127.0.0.1:5672/?auth_mechanism=bogus",
		"amqp://user:" + secret + "@127.0.0.1:99999/",
		"http://user:" + secret + "@127.0.0.1:5672/",
	} {
		c, err := rabbitsub.New(url, "q", h, append(fast(), consumer.WithLogger(discard()))...)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = c.Run(ctx)
			cancel()
			t.Errorf("New(%s) accepted it; Run returned %v", url, err)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New(%s) error shows the password: %v", url, err)
		}
	}
}

// A consumer stopped while a failed message waits for its next attempt
// hands the message back: it is in the queue afterwards, not acked, not
// dead-lettered.
func TestStopBetweenRetriesHandsBack(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	b.publish(t, q, amqp.Publishing{MessageId: uuid.NewString(), Body: []byte("x")})
	failed := make(chan struct{}, 1)
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errors.New("not yet")
	})
	c, err := rabbitsub.New(b.url, q, h, consumer.WithBackoff(time.Minute, time.Minute), consumer.WithMaxAttempts(100),
		consumer.WithShutdownTimeout(10*time.Second), consumer.WithLogger(discard()))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	select {
	case <-failed:
	case <-time.After(20 * time.Second):
		t.Fatal("handler not called")
	}
	time.Sleep(100 * time.Millisecond) // now waiting a minute for the next attempt
	r.Stop(t)
	waitFor(t, 10*time.Second, "the message waiting between retries was not handed back", func() bool { return b.depth(t, q) == 1 })
	if n := b.count(t, q+consumer.DeadLetterSuffix); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// textLogger logs at every level, as text, into w.
func textLogger(mu *sync.Mutex, w *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, w}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// withCredentials returns the test broker's URL with other credentials or
// another virtual host.
func withCredentials(t *testing.T, user, pass, vhost string) string {
	t.Helper()
	u, err := neturl.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(user, pass)
	u.Path = "/" + vhost
	return u.String()
}

// Ping reports at once what would stop Run: refused credentials or virtual
// host (as rabbitmq.ErrRefused), a missing queue; a queue the topology
// declares is not missing.
func TestPing(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	h := consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil })
	absent := testenv.Name(t, "absent")
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(absent, false, false, false)
			_, _ = ch.QueueDelete(absent+consumer.DeadLetterSuffix, false, false, false)
			_ = ch.Close()
		}
	})
	for _, tc := range []struct {
		name, url, queue string
		opts             []consumer.Option
		refused, ok      bool
	}{
		{name: "good", url: b.url, queue: q, ok: true},
		{name: "wrong password", url: withCredentials(t, "guest", "not-the-password", ""), queue: q, refused: true},
		{name: "unknown vhost", url: withCredentials(t, "guest", "guest", testenv.Name(t, "vhost")), queue: q, refused: true},
		{name: "missing queue", url: b.url, queue: absent},
		{name: "queue declared by the topology", url: b.url, queue: absent, ok: true,
			opts: []consumer.Option{rabbitsub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: absent}}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rabbitsub.New(tc.url, tc.queue, h, append(tc.opts, consumer.WithLogger(discard()))...)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testenv.Context(t, 20*time.Second)
			err = c.Ping(ctx)
			if (err == nil) != tc.ok || errors.Is(err, rabbitmq.ErrRefused) != tc.refused || ctx.Err() != nil {
				t.Fatalf("Ping = %v (ctx %v)", err, ctx.Err())
			}
			if err != nil && (strings.Contains(err.Error(), "not-the-password") || (!tc.refused && !strings.Contains(err.Error(), tc.queue))) {
				t.Fatalf("Ping error %q shows the password or does not name the queue", err)
			}
		})
	}
}

// Refused credentials or virtual hosts end Run at once with an error,
// instead of reconnecting forever.
func TestRunEndsOnRefusal(t *testing.T) {
	for name, url := range map[string]string{
		"wrong password": withCredentials(t, "guest", "not-the-password", ""),
		"unknown vhost":  withCredentials(t, "guest", "guest", testenv.Name(t, "vhost")),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := rabbitsub.New(url, "q", consumer.HandlerFunc(func(context.Context, *consumer.Message) error { return nil }),
				append(fast(), consumer.WithLogger(discard()))...)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testenv.Context(t, 20*time.Second)
			err = c.Run(ctx)
			if !errors.Is(err, rabbitmq.ErrRefused) || ctx.Err() != nil {
				t.Fatalf("Run = %v (ctx %v), want ErrRefused at once", err, ctx.Err())
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// With WithFailoverURLs, a consumer whose first node is down consumes from
// the next one; a failover URL that cannot parse is an error from New that
// names the option and not the password.
func TestFailoverURLs(t *testing.T) {
	b := newBroker(t)
	q := b.queue(t, "q")
	msgs, _ := normal(3)
	b.publish(t, q, msgs...)
	var h handled
	c, err := rabbitsub.New("amqp://guest:guest@127.0.0.1:1/", q, consumer.HandlerFunc(h.handler),
		append(fast(), rabbitsub.WithFailoverURLs(b.url), consumer.WithLogger(discard()))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(testenv.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	r := start(t, c)
	waitFor(t, 20*time.Second, "messages not handled through the second node", func() bool { return h.count() == 3 })
	r.Stop(t)
	_, err = rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler), rabbitsub.WithFailoverURLs("amqp://u:s3cret%zz@host/"))
	if err == nil || !strings.Contains(err.Error(), "WithFailoverURLs") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("New with a bad failover URL: %v", err)
	}
	if _, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler), rabbitsub.WithFailoverURLs()); err == nil {
		t.Fatal("WithFailoverURLs() accepted")
	}
	if _, err := rabbitsub.New(b.url, q, consumer.HandlerFunc(h.handler), rabbitsub.WithTopology(rabbitmq.Topology{Queues: []rabbitmq.Queue{{}}})); err == nil ||
		!strings.Contains(err.Error(), "WithTopology") {
		t.Fatalf("New with an invalid topology: %v", err)
	}
}
