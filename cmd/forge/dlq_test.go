package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// dlqLine is a line of list --json, read independently of the command's
// own type.
type dlqLine struct {
	DeadLetter    string          `json:"dead_letter"`
	Form          string          `json:"form"`
	MessageID     string          `json:"message_id"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id"`
	Type          string          `json:"type"`
	Reason        string          `json:"reason"`
	Attempts      int             `json:"attempts"`
	Queue         string          `json:"queue"`
	Exchange      *string         `json:"exchange"`
	RoutingKey    *string         `json:"routing_key"`
	Topic         string          `json:"topic"`
	Partition     *int            `json:"partition"`
	Offset        *int64          `json:"offset"`
	Omitted       []string        `json:"omitted"`
	Redrivable    bool            `json:"redrivable"`
	Problem       string          `json:"problem"`
	Properties    map[string]any  `json:"properties"`
	Headers       json.RawMessage `json:"headers"`
	Key           []byte          `json:"key"`
	Body          *[]byte         `json:"body"`
	BodyFrom      string          `json:"body_from"`
	Action        string          `json:"action"`
	To            string          `json:"to"`
	Error         string          `json:"error"`
	// the redrive summary
	Matched    *int   `json:"matched"`
	Redriven   *int   `json:"redriven"`
	Refused    *int   `json:"refused"`
	Failed     *int   `json:"failed"`
	DryRun     *bool  `json:"dry_run"`
	FromOffset string `json:"from_offset"`
}

func readLines(t *testing.T, out string) []dlqLine {
	t.Helper()
	var lines []dlqLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l dlqLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("--json line %.300q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

func ids(lines []dlqLine) []string {
	var out []string
	for _, l := range lines {
		if l.Matched == nil {
			out = append(out, l.MessageID)
		}
	}
	return out
}

// dlqCLI runs forge dlq and fails the test on an unexpected exit status.
func dlqCLI(t *testing.T, env map[string]string, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, out, errOut := runCLI(t, env, append([]string{"dlq"}, args...)...)
	if code != want {
		t.Fatalf("forge dlq %s: exit %d, want %d\nstdout: %.2000s\nstderr: %.2000s", strings.Join(shorten(args), " "), code, want, out, errOut)
	}
	return out, errOut
}

func shorten(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if len(a) > 80 {
			out[i] = a[:80] + "…"
		}
	}
	return out
}

// rabbit is the test's own connection to the broker.
type rabbit struct {
	url  string
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newRabbit(t *testing.T) *rabbit {
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
	return &rabbit{url: url, conn: conn, ch: ch}
}

// declare declares the queues of topo (none: a classic queue q) and deletes
// q and its dead-letter queue when the test ends.
func (r *rabbit) declare(t *testing.T, topo rabbitmq.Topology) string {
	t.Helper()
	q := testenv.Name(t, "dlq")
	if len(topo.Queues) == 0 {
		topo.Queues = []rabbitmq.Queue{{Name: q}}
	} else {
		q = topo.Queues[0].Name
	}
	if err := topo.Declare(r.ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A connection of its own: the test's may have died on a poison message.
		conn, err := amqp.Dial(r.url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			for _, qu := range topo.Queues {
				_, _ = ch.QueueDelete(qu.Name, false, false, false)
			}
			_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
		}
	})
	return q
}

func (r *rabbit) publish(t *testing.T, q string, msgs ...amqp.Publishing) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	for _, m := range msgs {
		dc, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish not confirmed: %v %v", ok, err)
		}
	}
}

// count returns the ready messages of q, -1 when q does not exist.
func (r *rabbit) count(t *testing.T, q string) int {
	t.Helper()
	ch, err := r.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		return -1
	}
	return st.Messages
}

// peek returns the message IDs of q in order, leaving q as it was: every
// message is read without ack, then all are requeued.
func (r *rabbit) peek(t *testing.T, q string) []string {
	t.Helper()
	ch, err := r.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var out []string
	var last uint64
	for {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		out = append(out, d.MessageId)
		last = d.DeliveryTag
	}
	if last > 0 {
		if err := ch.Nack(last, true, true); err != nil {
			t.Fatal(err)
		}
	}
	return out
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

// seen records what a handler processed: how often each ID, and the last
// message of each.
type seen struct {
	mu   sync.Mutex
	n    map[uuid.UUID]int
	msgs map[uuid.UUID]consumer.Message
}

func (s *seen) add(m *consumer.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n, s.msgs = map[uuid.UUID]int{}, map[uuid.UUID]consumer.Message{}
	}
	s.n[m.ID]++
	c := *m
	c.Body = slices.Clone(m.Body)
	s.msgs[m.ID] = c
}

func (s *seen) count(id uuid.UUID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[id]
}

func (s *seen) msg(id uuid.UUID) consumer.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[id]
}

func (s *seen) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.n {
		n += c
	}
	return n
}

// runRabbit runs a rabbitsub consumer of q with handler h until done
// returns true, then stops it.
func runRabbit(t *testing.T, url, q string, h consumer.HandlerFunc, done func() bool, opts ...consumer.Option) {
	t.Helper()
	opts = append([]consumer.Option{consumer.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		consumer.WithShutdownTimeout(10 * time.Second), consumer.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	c, err := rabbitsub.New(url, q, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !done() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("consumer: %v", err)
	}
	if !done() {
		t.Fatal("after 20s: the consumer did not get there")
	}
}

// TestDLQRabbit: real dead letters — a plain one (the handler failed twice)
// and an envelope (an oversized header: the dead-letter headers would not
// fit in a frame) — are listed (without consuming them), filtered, shown
// and redriven; a consumer that now succeeds processes each once, with its
// original IDs, headers and body, and the dead-letter headers gone.
func TestDLQRabbit(t *testing.T) {
	r := newRabbit(t)
	q := r.declare(t, rabbitmq.Topology{})
	dlq := q + consumer.DeadLetterSuffix
	plainID, envID, okID, corr, cause := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	big := strings.Repeat("h", 130880)
	r.publish(t, q,
		amqp.Publishing{MessageId: plainID.String(), CorrelationId: corr.String(), Type: "order.created",
			ContentType: "text/plain", Headers: amqp.Table{"tenant": "7", lineage.HeaderCausationID: cause.String()}, Body: []byte("plain body")},
		amqp.Publishing{MessageId: envID.String(), Type: "order.created", Headers: amqp.Table{"h": big}, Body: []byte("big header")},
		amqp.Publishing{MessageId: okID.String(), Type: "order.created", Body: []byte("fine")},
	)
	var first seen
	runRabbit(t, r.url, q, func(_ context.Context, m *consumer.Message) error {
		switch m.ID {
		case plainID:
			return errors.New("boom: plain failure\nsecond line")
		case envID:
			return consumer.Permanent(errors.New("boom: envelope failure"))
		}
		first.add(m)
		return nil
	}, func() bool { return first.count(okID) == 1 && r.count(t, dlq) == 2 }, consumer.WithMaxAttempts(2))

	before := r.peek(t, dlq)
	broker := []string{"--queue", q, "--amqp", r.url}

	// list, in text and JSON; the queue is unchanged.
	out, _ := dlqCLI(t, nil, 0, append([]string{"list"}, broker...)...)
	for _, want := range []string{plainID.String(), envID.String(), "plain", "envelope", "boom: plain failure second line",
		"queue " + q, "2 of 2 dead letters read from queue " + dlq} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "guest:guest") {
		t.Errorf("list output shows the password:\n%s", out)
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"list", "--json"}, broker...)...)
	lines := readLines(t, out)
	if got := ids(lines); !slices.Equal(got, before) {
		t.Fatalf("list --json IDs %v, the queue holds %v", got, before)
	}
	for _, l := range lines {
		switch l.MessageID {
		case plainID.String():
			if l.Form != "plain" || l.Attempts != 2 || l.Queue != q || l.Reason != "boom: plain failure\nsecond line" ||
				l.CorrelationID != corr.String() || l.CausationID != cause.String() || l.Type != "order.created" || !l.Redrivable {
				t.Errorf("plain dead letter: %+v", l)
			}
		case envID.String():
			if l.Form != "envelope" || l.Attempts != 1 || l.Queue != q || l.Reason != "boom: envelope failure" ||
				l.Exchange == nil || *l.Exchange != "" || l.RoutingKey == nil || *l.RoutingKey != q || !l.Redrivable {
				t.Errorf("envelope dead letter: %+v", l)
			}
		}
	}
	for name, args := range map[string][]string{
		"reason":        {"--reason", "plain failure"},
		"reason-regexp": {"--reason-regexp", "^boom: p"},
		"id":            {"--id", strings.ToUpper(plainID.String())},
		"limit":         {"--limit", "1", "--reason", "boom"},
	} {
		out, _ := dlqCLI(t, nil, 0, append(append([]string{"list", "--json"}, args...), broker...)...)
		want := []string{plainID.String()}
		if name == "limit" {
			want = before[:1]
		}
		if got := ids(readLines(t, out)); !slices.Equal(got, want) {
			t.Errorf("list --%s: %v, want %v", name, got, want)
		}
	}
	if got := r.peek(t, dlq); !slices.Equal(got, before) {
		t.Fatalf("after listing, the dead-letter queue holds %v, before %v", got, before)
	}

	// show, in text, JSON and raw; AMQP_URL instead of --amqp.
	env := map[string]string{envAMQP: r.url}
	out, _ = dlqCLI(t, env, 0, "show", "--queue", q, plainID.String())
	for _, want := range []string{"form:           plain", "tenant: \"7\"", "plain body", "content-type: \"text/plain\"",
		"redrive:        possible", "second line"} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	if out, _ := dlqCLI(t, env, 0, "show", "--raw", "--queue", dlq, envID.String()); out != "big header" {
		t.Errorf("show --raw: %q", out)
	}
	out, _ = dlqCLI(t, env, 0, "show", "--json", "--queue", q, envID.String())
	shown := readLines(t, out)
	var headers map[string]any
	if len(shown) != 1 || json.Unmarshal(shown[0].Headers, &headers) != nil || headers["h"] != big ||
		shown[0].Body == nil || string(*shown[0].Body) != "big header" {
		t.Errorf("show --json: %.500s", out)
	}
	dlqCLI(t, env, exitAbsent, "show", "--queue", q, uuid.NewString())

	// redrive: a dry run changes nothing; then one by ID, one by reason.
	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--dry-run", "--all"}, broker...)...)
	if strings.Count(out, "would redrive") != 3 || r.count(t, q) != 0 {
		t.Errorf("dry run: %d messages in %s; output:\n%s", r.count(t, q), q, out)
	}
	if got := r.peek(t, dlq); !slices.Equal(got, before) {
		t.Fatalf("after a dry run, the dead-letter queue holds %v, before %v", got, before)
	}
	dlqCLI(t, nil, 2, append([]string{"redrive"}, broker...)...) // no filter, no --all
	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--id", plainID.String()}, broker...)...)
	if !strings.Contains(out, "redriven 1, refused 0, failed 0 of 1") || r.count(t, dlq) != 1 || r.count(t, q) != 1 {
		t.Fatalf("redrive --id: %d dead letters, %d in %s; output:\n%s", r.count(t, dlq), r.count(t, q), q, out)
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--json", "--reason", "envelope failure"}, broker...)...)
	if got := readLines(t, out); len(got) != 2 || got[0].Action != "redriven" || got[1].Redriven == nil || *got[1].Redriven != 1 {
		t.Errorf("redrive --json: %s", out)
	}
	if n := r.count(t, dlq); n != 0 {
		t.Fatalf("%d dead letters left", n)
	}
	dlqCLI(t, nil, exitAbsent, append([]string{"redrive", "--all"}, broker...)...)

	var second seen
	runRabbit(t, r.url, q, func(_ context.Context, m *consumer.Message) error { second.add(m); return nil },
		func() bool { return second.count(plainID) == 1 && second.count(envID) == 1 })
	time.Sleep(200 * time.Millisecond)
	if second.total() != 2 {
		t.Errorf("%d messages processed, want 2", second.total())
	}
	p := second.msg(plainID)
	if p.CorrelationID != corr || p.CausationID != cause || p.Type != "order.created" || string(p.Body) != "plain body" || p.Headers["tenant"] != "7" {
		t.Errorf("redriven plain message: %+v", p)
	}
	e := second.msg(envID)
	if e.Headers["h"] != big || string(e.Body) != "big header" {
		t.Errorf("redriven envelope message: %d-byte header h, body %q", len(e.Headers["h"]), e.Body)
	}
	for _, m := range []consumer.Message{p, e} {
		for _, k := range []string{consumer.HeaderDeadLetterReason, consumer.HeaderAttempts, consumer.HeaderOriginalQueue, consumer.HeaderDeadLetterID} {
			if _, ok := m.Headers[k]; ok {
				t.Errorf("redriven message %s keeps the dead-letter header %s", m.ID, k)
			}
		}
	}
}

// plainDeadLetter makes one plain dead letter of q with a consumer whose
// handler fails, and returns its message ID.
func plainDeadLetter(t *testing.T, r *rabbit, q string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	r.publish(t, q, amqp.Publishing{MessageId: id.String(), Type: "t", Body: []byte("body")})
	runRabbit(t, r.url, q, func(context.Context, *consumer.Message) error { return consumer.Permanent(errors.New("boom")) },
		func() bool { return r.count(t, q+consumer.DeadLetterSuffix) == 1 })
	return id
}

// A republish that fails (the original queue is gone: the broker returns
// the message) leaves the dead letter in place; once the queue is back,
// redrive succeeds.
func TestDLQRabbitFailedRepublish(t *testing.T) {
	r := newRabbit(t)
	q := r.declare(t, rabbitmq.Topology{})
	dlq := q + consumer.DeadLetterSuffix
	id := plainDeadLetter(t, r, q)
	if _, err := r.ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	out, errOut := dlqCLI(t, nil, 1, "redrive", "--all", "--queue", dlq, "--amqp", r.url)
	if !strings.Contains(out, "failed") || !strings.Contains(out, "no queue "+q) || !strings.Contains(errOut, "1 of 1 matching dead letters not redriven") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	if got := r.peek(t, dlq); !slices.Equal(got, []string{id.String()}) {
		t.Fatalf("dead-letter queue holds %v", got)
	}
	if _, err := r.ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	dlqCLI(t, nil, 0, "redrive", "--all", "--queue", dlq, "--amqp", r.url)
	if r.count(t, dlq) != 0 || r.count(t, q) != 1 {
		t.Errorf("%d dead letters, %d messages in %s; want 0 and 1", r.count(t, dlq), r.count(t, q), q)
	}
}

// nestedHeaders is a table nested deeper than amqp091-go reads.
func nestedHeaders(depth int) amqp.Table {
	t := amqp.Table{"leaf": "x"}
	for range depth - 1 {
		t = amqp.Table{"n": t}
	}
	return amqp.Table{"n": t}
}

// Dead letters of the broker: a quorum queue's delivery limit moved a
// message, and a message whose headers amqp091-go cannot read (its
// deliveries closed a client's connection until the limit was reached),
// to a quorum dead-letter queue. Both are listed — the command's connection
// survives the unreadable one — with a warning that reads count as
// deliveries there; redrive republishes the first without the broker's
// headers and refuses the second, which stays.
func TestDLQRabbitBroker(t *testing.T) {
	r := newRabbit(t)
	q := testenv.Name(t, "dlq")
	dlq := q + consumer.DeadLetterSuffix
	r.declare(t, rabbitmq.Topology{Queues: []rabbitmq.Queue{
		{Name: q, Type: rabbitmq.Quorum, DeliveryLimit: 1, DeadLetterExchange: "", DeadLetterRoutingKey: dlq},
		{Name: dlq, Type: rabbitmq.Quorum},
	}})
	goodID, poisonID := uuid.New(), uuid.New()
	r.publish(t, q, amqp.Publishing{MessageId: goodID.String(), Type: "t", Headers: amqp.Table{"tenant": "7"}, Body: []byte("good")})
	ch, err := r.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the broker did not dead-letter the message", func() bool {
		if d, ok, err := ch.Get(q, false); err == nil && ok {
			_ = d.Nack(false, true)
		}
		return r.count(t, dlq) == 1
	})
	r.publish(t, q, amqp.Publishing{MessageId: poisonID.String(), Headers: nestedHeaders(33), Body: []byte("poison")})
	waitFor(t, 10*time.Second, "the broker did not dead-letter the poison message", func() bool {
		conn, err := amqp.Dial(r.url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _, _ = ch.Get(q, false) // the client closes its connection on it
		}
		return r.count(t, dlq) == 2
	})

	broker := []string{"--queue", q, "--amqp", r.url}
	out, errOut := dlqCLI(t, nil, 0, append([]string{"list", "--json"}, broker...)...)
	lines := readLines(t, out)
	if len(lines) != 2 {
		t.Fatalf("%d dead letters listed:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if l.Form != "broker" || l.Queue != q || !strings.Contains(l.Reason, "dead-lettered by the broker: delivery_limit") {
			t.Errorf("broker dead letter: %+v", l)
		}
		switch l.MessageID {
		case goodID.String():
			if !l.Redrivable || l.RoutingKey == nil || *l.RoutingKey != q {
				t.Errorf("dead letter of the good message: %+v", l)
			}
		case poisonID.String():
			if l.Redrivable || !strings.Contains(l.Problem, "unreadable by the AMQP client") {
				t.Errorf("dead letter of the poison message: %+v", l)
			}
		}
	}
	if !strings.Contains(errOut, "is a quorum queue") {
		t.Errorf("no warning about the quorum queue on stderr: %q", errOut)
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"show"}, append(broker, poisonID.String())...)...)
	if !strings.Contains(out, "redrive:        refused: its headers are unreadable") {
		t.Errorf("show of the poison dead letter:\n%s", out)
	}

	out, errOut = dlqCLI(t, nil, 1, append([]string{"redrive", "--all"}, broker...)...)
	if !strings.Contains(out, "refused  ") || !strings.Contains(errOut, "1 of 2 matching dead letters not redriven") {
		t.Errorf("redrive: stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	// (The test's own connection cannot read the poison message.)
	out, _ = dlqCLI(t, nil, 0, append([]string{"list", "--json"}, broker...)...)
	if got := ids(readLines(t, out)); !slices.Equal(got, []string{poisonID.String()}) {
		t.Errorf("dead-letter queue holds %v, want the poison message alone", got)
	}
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("the redriven message is not in %s: %v %v", q, ok, err)
	}
	if d.MessageId != goodID.String() || d.Headers["tenant"] != "7" || string(d.Body) != "good" {
		t.Errorf("redriven message %q, headers %v, body %q", d.MessageId, d.Headers, d.Body)
	}
	for k := range d.Headers {
		if k != "tenant" && k != headerDeliveryCount {
			t.Errorf("redriven message keeps header %s", k)
		}
	}
}

// A message whose headers amqp091-go cannot read, dead-lettered by the
// consumer in an envelope: shown with its headers, never redriven.
func TestDLQRabbitPoisonEnvelope(t *testing.T) {
	r := newRabbit(t)
	q := r.declare(t, rabbitmq.Topology{})
	dlq := q + consumer.DeadLetterSuffix
	id := uuid.New()
	r.publish(t, q, amqp.Publishing{MessageId: id.String(), Headers: nestedHeaders(33), Body: []byte("poison")})
	runRabbit(t, r.url, q, func(context.Context, *consumer.Message) error { return nil },
		func() bool { return r.count(t, dlq) == 1 })
	broker := []string{"--queue", dlq, "--amqp", r.url}
	out, _ := dlqCLI(t, nil, 0, append([]string{"show"}, append(broker, id.String())...)...)
	for _, want := range []string{"form:           envelope", "refused: its headers are unreadable by the AMQP client (header tables nested deeper than 32 levels)",
		"n: {n: {n:", "poison"} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	out, _ = dlqCLI(t, nil, 1, append([]string{"redrive", "--id", id.String()}, broker...)...)
	if !strings.Contains(out, "refused") || r.count(t, dlq) != 1 || r.count(t, q) != 0 {
		t.Errorf("redrive: %d dead letters, %d messages; output:\n%s", r.count(t, dlq), r.count(t, q), out)
	}
	out, _ = dlqCLI(t, nil, 1, append([]string{"redrive", "--dry-run", "--id", id.String()}, broker...)...)
	if !strings.Contains(out, "refused") {
		t.Errorf("dry run does not report the refusal:\n%s", out)
	}
}

// With --via-exchange, redrive publishes to the original exchange and
// routing key an envelope or broker dead letter names, and refuses a plain
// dead letter, which names only its queue.
func TestDLQRabbitViaExchange(t *testing.T) {
	r := newRabbit(t)
	ex := testenv.Name(t, "ex")
	q := testenv.Name(t, "dlq")
	other := q + "_other"
	r.declare(t, rabbitmq.Topology{
		Exchanges: []rabbitmq.Exchange{{Name: ex, Kind: "direct"}},
		Queues:    []rabbitmq.Queue{{Name: q}, {Name: other}},
		Bindings:  []rabbitmq.Binding{{Exchange: ex, Queue: q, Key: "k"}, {Exchange: ex, Queue: other, Key: "k"}},
	})
	t.Cleanup(func() { _ = r.ch.ExchangeDelete(ex, false, false) })
	plain, env := uuid.New(), uuid.New()
	for _, m := range []amqp.Publishing{
		{MessageId: plain.String(), Type: "t", Body: []byte("plain")},
		{MessageId: env.String(), Type: "t", UserId: "guest", Body: []byte("envelope")}, // user-id: an envelope
	} {
		dc, err := r.ch.PublishWithDeferredConfirmWithContext(context.Background(), ex, "k", true, false, m)
		if err != nil {
			t.Fatal(err)
		}
		if ok := dc.Wait(); !ok {
			t.Fatal("not confirmed")
		}
	}
	runRabbit(t, r.url, q, func(context.Context, *consumer.Message) error { return consumer.Permanent(errors.New("boom")) },
		func() bool { return r.count(t, q+consumer.DeadLetterSuffix) == 2 })
	out, _ := dlqCLI(t, nil, 1, "redrive", "--all", "--via-exchange", "--queue", q, "--amqp", r.url)
	if !strings.Contains(out, "redriven 1, refused 1") || !strings.Contains(out, "original exchange is not known") ||
		!strings.Contains(out, "to exchange "+ex+" with routing key \"k\"") {
		t.Errorf("output:\n%s", out)
	}
	// Through the exchange: the queue bound beside the original gets it too.
	if r.count(t, q) != 1 || r.count(t, other) != 3 {
		t.Errorf("%d messages in %s, %d in %s; want 1 and 3", r.count(t, q), q, r.count(t, other), other)
	}
}

// Flags are checked before anything is dialled; passwords are never shown.
func TestDLQUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no command", nil, nil, 2, "dlq needs list, show or redrive"},
		{"unknown command", nil, []string{"purge"}, 2, "unknown dlq command"},
		{"no source", nil, []string{"list"}, 2, "give --queue (RabbitMQ) or --topic (Kafka)"},
		{"both sources", nil, []string{"list", "--queue", "q", "--topic", "t"}, 2, "give --queue (RabbitMQ) or --topic (Kafka)"},
		{"no URL", nil, []string{"list", "--queue", "q"}, 2, "give --amqp URL (or set AMQP_URL)"},
		{"no brokers", nil, []string{"list", "--topic", "t"}, 2, "give --kafka host:port,... (or set KAFKA_BROKERS)"},
		{"bad brokers", nil, []string{"list", "--topic", "t", "--kafka", "localhost"}, 2, `"localhost" is not host:port`},
		{"kafka for a queue", nil, []string{"list", "--queue", "q", "--kafka", "h:1"}, 2, "--kafka is for --topic"},
		{"from-offset for a queue", nil, []string{"list", "--queue", "q", "--from-offset", "0:1"}, 2, "--from-offset is for Kafka"},
		{"bad from-offset", nil, []string{"list", "--topic", "t", "--from-offset", "0-1"}, 2, "is not PARTITION:OFFSET"},
		{"bad regexp", nil, []string{"list", "--queue", "q", "--reason-regexp", "("}, 2, "--reason-regexp"},
		{"redrive without filter", nil, []string{"redrive", "--queue", "q"}, 2, "needs a filter"},
		{"all with a filter", nil, []string{"redrive", "--all", "--reason", "x", "--queue", "q"}, 2, "--all redrives every dead letter"},
		{"raw and json", nil, []string{"show", "--raw", "--json", "--queue", "q", "id"}, 2, "--raw writes the body alone"},
		{"show without ID", nil, []string{"show", "--queue", "q"}, 2, "dlq show takes one MESSAGE-ID"},
		{"flags after ID", nil, []string{"show", "--queue", "q", "id", "--raw"}, 2, "flags go before the arguments"},
		{"list with argument", nil, []string{"list", "--queue", "q", "x"}, 2, "dlq list takes no arguments"},
		{"via-exchange for a topic", nil, []string{"redrive", "--all", "--via-exchange", "--topic", "t"}, 2, "--via-exchange is for RabbitMQ"},
		{"not a URL", nil, []string{"list", "--queue", "q", "--amqp", "amqp://u:p%zz@h/"}, 1, "not a URL (the value is not shown"},
		{"wrong scheme", nil, []string{"list", "--queue", "q", "--amqp", "http://u:s3cretpw@h/"}, 1, "want a amqp:// or amqps:// URL"},
		{"unreachable", map[string]string{envAMQP: "amqp://u:s3cretpw@127.0.0.1:1/"}, []string{"list", "--queue", "q", "--timeout", "5s"}, 1, "amqp://u:xxxxx@127.0.0.1:1/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, append([]string{"dlq"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q), stdout %q", code, tc.code, errOut, tc.want, out)
			}
			if strings.Contains(out+errOut, "s3cretpw") || strings.Contains(out+errOut, "p%zz") {
				t.Errorf("the password is shown: %q %q", out, errOut)
			}
		})
	}
	code, out, _ := runCLI(t, nil, "dlq", "-h")
	if code != 0 || !strings.Contains(out, "forge dlq redrive") {
		t.Errorf("dlq -h: exit %d, %q", code, out)
	}
}

// FuzzFromOffset: what parseFromOffset accepts, formatOffsets writes back
// in a form it reads to the same positions.
func FuzzFromOffset(f *testing.F) {
	for _, s := range []string{"0:1", "0:5,1:43,2:0", " 1:2 , 0:3", "0:1,0:2", "-1:0", "0:-1", "a:b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseFromOffset(s)
		if err != nil {
			return
		}
		again, err := parseFromOffset(formatOffsets(m))
		if err != nil || len(again) != len(m) {
			t.Fatalf("%q: %v, then %v (%v)", s, m, again, err)
		}
		for p, o := range m {
			if again[p] != o || p < 0 || o < 0 {
				t.Fatalf("%q: %v, then %v", s, m, again)
			}
		}
	})
}
