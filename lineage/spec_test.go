package lineage_test

// These tests hold forge/SPEC.md §8 ("Message IDs") and the code to each
// other: they read the wire table, the reserved names and the content-ID
// examples from the spec, derive every expected value by the spec's rules
// (not by the functions under test), and compare them with what the Go
// publishers put on a real RabbitMQ and an in-process Kafka, and with what
// the Go consumers read back.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// spec returns SPEC.md's §8 (from its heading to the end).
func spec(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../forge/SPEC.md")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), "\n## 8. Message IDs\n")
	if i < 0 {
		t.Fatal("SPEC.md has no section 8. Message IDs")
	}
	return string(data[i:])
}

// between returns the text of s between <!-- name:begin --> and <!-- name:end -->.
func between(t *testing.T, s, name string) string {
	t.Helper()
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("SPEC.md §8 has no %s block", name)
	}
	return s[i+len(begin) : j]
}

// paragraph returns the paragraph of s that starts with label.
func paragraph(t *testing.T, s, label string) string {
	t.Helper()
	i := strings.Index(s, "\n"+label)
	if i < 0 {
		t.Fatalf("SPEC.md §8 has no paragraph %q", label)
	}
	p := s[i+1:]
	if j := strings.Index(p, "\n\n"); j >= 0 {
		p = p[:j]
	}
	return strings.ReplaceAll(p, "\n", " ")
}

var backticked = regexp.MustCompile("`([^`]*)`")

// ticked returns the backticked strings of s, in order.
func ticked(s string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// wire is one row of the spec's wire table: where a field travels.
type wire struct{ field, rabbit, kafka string }

// wireTable returns the rows of the spec's wire table.
func wireTable(t *testing.T) []wire {
	t.Helper()
	var rows []wire
	for _, line := range strings.Split(between(t, spec(t), "spec-wire"), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == "field" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		rows = append(rows, wire{cells[0], cells[1], cells[2]})
	}
	var fields []string
	for _, r := range rows {
		fields = append(fields, r.field)
	}
	want := []string{"message ID", "correlation ID", "causation ID", "type", "key", "body"}
	if !slices.Equal(fields, want) {
		t.Fatalf("wire table fields %q, want %q", fields, want)
	}
	return rows
}

// headerName returns X for a location "header `X`".
func headerName(loc string) (string, bool) {
	name, ok := strings.CutPrefix(loc, "header `")
	if !ok {
		return "", false
	}
	return strings.TrimSuffix(name, "`"), true
}

// declaredHeaders returns the values of the Header* constants of package
// lineage, read from its source so that a new one cannot be missed.
func declaredHeaders(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				v := s.(*ast.ValueSpec)
				for i, n := range v.Names {
					if !strings.HasPrefix(n.Name, "Header") {
						continue
					}
					lit, ok := v.Values[i].(*ast.BasicLit)
					if !ok {
						t.Fatalf("lineage.%s is not a string literal", n.Name)
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					names = append(names, s)
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// TestSpecReservedNames checks that the reserved names of SPEC.md §8 are
// the header names package lineage declares, that every header of the wire
// table is one of them, and that the publishers reserve exactly those.
func TestSpecReservedNames(t *testing.T) {
	s := spec(t)
	p := paragraph(t, s, "**Reserved names.**")
	i := strings.Index(p, "are reserved")
	if i < 0 {
		t.Fatalf("reserved-names paragraph without \"are reserved\": %s", p)
	}
	reserved := ticked(p[:i])
	slices.Sort(reserved)
	declared := declaredHeaders(t)
	if !slices.Equal(reserved, declared) {
		t.Fatalf("SPEC reserves %q, lineage declares %q", reserved, declared)
	}
	if want := "The " + map[int]string{4: "four", 5: "five", 6: "six"}[len(declared)] + " names"; !strings.Contains(p, want) {
		t.Errorf("reserved-names paragraph does not say %q: %s", want, p)
	}
	for _, r := range wireTable(t) {
		for _, loc := range []string{r.rabbit, r.kafka} {
			if h, ok := headerName(loc); ok && !slices.Contains(declared, h) {
				t.Errorf("wire table header %q (%s) is not declared in lineage", h, r.field)
			}
		}
	}
	for _, name := range append(declared, "x-app") {
		msg := publisher.Message{Type: "t", Body: []byte("b"), Headers: map[string]string{name: "v"}}
		err := publisher.Validate(&msg, 0)
		if isReserved := slices.Contains(declared, name); isReserved != errors.Is(err, publisher.ErrInvalid) {
			t.Errorf("header %q: reserved %v, Validate: %v", name, isReserved, err)
		}
		var set []string
		publisher.NewPublication(func(n, _ string) { set = append(set, n) }).SetHeader(name, "v")
		if isReserved := slices.Contains(declared, name); isReserved == (len(set) == 1) {
			t.Errorf("observer header %q: reserved %v, set %q", name, isReserved, set)
		}
	}
}

// specKeyBytes is the key-bytes rule of SPEC.md §8, written out: none for
// no parts, a single string's UTF-8 bytes, a single byte string's bytes,
// otherwise the JCS name of the parts.
func specKeyBytes(t *testing.T, parts []any) []byte {
	t.Helper()
	if len(parts) == 0 {
		return nil
	}
	if len(parts) == 1 {
		switch p := parts[0].(type) {
		case string:
			return []byte(p)
		case []byte:
			return p
		}
	}
	name, err := forge.Canonical(parts...)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestSpecKeyBytes checks the examples of the key-bytes paragraph against
// the rule and the publishers' function, and the consequence for
// verification of key bytes that are empty.
func TestSpecKeyBytes(t *testing.T) {
	s := spec(t)
	examples := ticked(paragraph(t, s, "**Key bytes.**"))
	for _, parts := range [][]any{nil, {"o-1001"}, {[]byte("raw")}, {"EUR", 12345}, {42}} {
		want := specKeyBytes(t, parts)
		got, err := publisher.KeyBytes(parts)
		if err != nil || string(got) != string(want) || (got == nil) != (want == nil) {
			t.Errorf("KeyBytes(%v) = %q, %v; the spec's rule gives %q", parts, got, err, want)
		}
	}
	for _, ex := range []string{"o-1001", `["EUR",12345]`, "[42]"} {
		if !slices.Contains(examples, ex) {
			t.Errorf("key-bytes paragraph lacks the example %s", ex)
		}
	}
	// "Absent or empty key bytes are read as no key (the body stands for
	// it) and as a key of a single empty string or byte string"
	if v := strings.Join(strings.Fields(paragraph(t, s, "**Verifying IDs.**")), " "); !strings.Contains(v, "as a key of a single empty string or byte string") {
		t.Fatalf("the verification paragraph no longer speaks of empty key bytes: %s", v)
	}
	gen := forge.MustNew("orders.example.com", forge.WithSecret("example-secret-do-not-use"))
	for _, key := range [][]any{nil, {""}, {[]byte{}}} {
		for _, body := range []string{"b", ""} {
			if key == nil && body == "" {
				continue // no key, no body: rejected by the publishers
			}
			msg := publisher.Message{Type: "t", Key: key, Body: []byte(body)}
			l, err := publisher.IDs(context.Background(), gen, &msg)
			if err != nil {
				t.Fatal(err)
			}
			m := &consumer.Message{ID: l.MessageID, Type: "t", Key: specKeyBytes(t, key), Body: []byte(body)}
			if err := consumer.VerifyID(gen, m); err != nil {
				t.Errorf("key %q, body %q: VerifyID: %v; the spec says empty key bytes verify either way", key, body, err)
			}
			// Another body under a keyed ID still fails: the key, not the
			// body, made it.
			other := *m
			other.Body = []byte(body + "x")
			if err := consumer.VerifyID(gen, &other); (err == nil) != (key != nil) {
				t.Errorf("key %q, body %q changed: VerifyID: %v", key, body, err)
			}
		}
	}
}

// specMessage is a message of the wire tests with the values the spec
// derives for it.
type specMessage struct {
	name   string
	parent *lineage.Lineage // the message being handled (in the context)
	msg    publisher.Message

	id, correlation, causation uuid.UUID
	key                        []byte // nil: no key
}

// derive fills the IDs and key bytes by SPEC.md §8: the parent is the
// handled message, else the explicit causation ID (with the explicit
// correlation ID); parts [parent ID,] type, key parts (or the body);
// correlation and causation by the table; key bytes from the key parts.
func (m *specMessage) derive(t *testing.T, gen *forge.Generator) {
	t.Helper()
	parent := m.parent
	if parent == nil && m.msg.CausationID != uuid.Nil {
		parent = &lineage.Lineage{MessageID: m.msg.CausationID, CorrelationID: m.msg.CorrelationID}
	}
	var parts []any
	if parent != nil {
		parts = append(parts, parent.MessageID)
	}
	parts = append(parts, m.msg.Type)
	if len(m.msg.Key) == 0 {
		parts = append(parts, append([]byte{}, m.msg.Body...))
	} else {
		parts = append(parts, m.msg.Key...)
	}
	m.id = gen.MustID(parts...)
	if m.msg.ID != uuid.Nil {
		m.id = m.msg.ID
	}
	switch {
	case parent != nil:
		m.causation, m.correlation = parent.MessageID, parent.CorrelationID
		if m.correlation == uuid.Nil {
			m.correlation = parent.MessageID
		}
	case m.msg.CorrelationID != uuid.Nil:
		m.correlation = m.msg.CorrelationID
	default:
		m.correlation = m.id
	}
	m.key = specKeyBytes(t, m.msg.Key)
}

// ctx returns the context the message is published in.
func (m *specMessage) ctx(ctx context.Context) context.Context {
	if m.parent != nil {
		return lineage.NewContext(ctx, *m.parent)
	}
	return ctx
}

// want returns the value the spec puts in field, and whether it is present.
func (m *specMessage) want(field string) (string, bool) {
	switch field {
	case "message ID":
		return m.id.String(), true
	case "correlation ID":
		return m.correlation.String(), true
	case "causation ID":
		if m.causation == uuid.Nil {
			return "", false
		}
		return m.causation.String(), true
	case "type":
		return m.msg.Type, true
	case "key":
		return string(m.key), m.key != nil
	case "body":
		return string(m.msg.Body), true
	}
	return "", false
}

// specMessages returns the messages the wire tests publish, derived with gen.
func specMessages(t *testing.T, gen *forge.Generator) []*specMessage {
	t.Helper()
	parent := &lineage.Lineage{MessageID: gen.MustID("order.created", "o-1001"), CorrelationID: gen.MustID("session", 7), Type: "order.created"}
	ms := []*specMessage{
		{name: "parent, several key parts, header", parent: parent, msg: publisher.Message{
			Type: "invoice.requested", Key: []any{"o-1001", 1}, Body: []byte(`{"total":1234}`), Headers: map[string]string{"x-app": "v"}}},
		{name: "root, one string part", msg: publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte("b")}},
		{name: "root, one byte-string part", msg: publisher.Message{Type: "blob.stored", Key: []any{[]byte{0, 0xff, 'k'}}, Body: []byte("b")}},
		{name: "root, one part of another type", msg: publisher.Message{Type: "order.created", Key: []any{42}, Body: []byte("b")}},
		{name: "root, no key", msg: publisher.Message{Type: "audit.line", Body: []byte("hello")}},
	}
	explicit := &lineage.Lineage{MessageID: gen.MustID("payment.received", "p-9"), CorrelationID: gen.MustID("session", 8)}
	ms = append(ms,
		&specMessage{name: "explicit parent", msg: publisher.Message{Type: "receipt.sent", Key: []any{"p-9"},
			CausationID: explicit.MessageID, CorrelationID: explicit.CorrelationID}},
		&specMessage{name: "explicit parent without correlation", msg: publisher.Message{Type: "receipt.sent", Key: []any{"p-10"},
			CausationID: explicit.MessageID}},
		&specMessage{name: "handled parent wins", parent: parent, msg: publisher.Message{Type: "receipt.sent", Key: []any{"p-11"},
			CausationID: explicit.MessageID, CorrelationID: explicit.CorrelationID}},
		&specMessage{name: "explicit correlation, root", msg: publisher.Message{Type: "receipt.sent", Key: []any{"p-12"},
			CorrelationID: explicit.CorrelationID}},
		&specMessage{name: "explicit message ID", parent: parent, msg: publisher.Message{Type: "receipt.sent", Key: []any{"p-13"},
			ID: uuid.New()}},
	)
	for _, m := range ms {
		if m.msg.Headers == nil {
			m.msg.Headers = map[string]string{}
		}
		m.msg.Headers["x-case"] = m.name
		m.derive(t, gen)
	}
	return ms
}

// checkWire checks that a record carries each field of m at the place the
// wire table gives in column place, as read returns it (its value and
// whether it is present), and no header but the table's and m's own.
func checkWire(t *testing.T, m *specMessage, rows []wire, place func(wire) string, read func(loc string) (string, bool), headers []string) {
	t.Helper()
	allowed := map[string]bool{}
	for k := range m.msg.Headers {
		allowed[k] = true
	}
	for _, r := range rows {
		loc := place(r)
		if h, ok := headerName(loc); ok {
			allowed[h] = true
		}
		want, present := m.want(r.field)
		if got, found := read(loc); found != present || got != want {
			t.Errorf("%s: %s at %s = %q (present %v); the spec derives %q (present %v)", m.name, r.field, loc, got, found, want, present)
		}
	}
	for _, h := range headers {
		if !allowed[h] {
			t.Errorf("%s: header %s is not in the wire table", m.name, h)
		}
	}
}

// checkReceived checks what a consumer made of a message the publisher
// sent: the IDs, type, key and body of the spec, and an ID that verifies
// unless it was explicit.
func checkReceived(t *testing.T, gen *forge.Generator, want *specMessage, got *consumer.Message) {
	t.Helper()
	if got.ID != want.id || got.CorrelationID != want.correlation || got.CausationID != want.causation ||
		got.Type != want.msg.Type || string(got.Key) != string(want.key) ||
		string(got.Body) != string(want.msg.Body) || got.ContentID {
		t.Errorf("%s: consumer read ID %s corr %s caus %s type %q key %q body %q (content ID %v); spec: %s %s %s %q %q %q",
			want.name, got.ID, got.CorrelationID, got.CausationID, got.Type, got.Key, got.Body, got.ContentID,
			want.id, want.correlation, want.causation, want.msg.Type, want.key, want.msg.Body)
	}
	for k, v := range want.msg.Headers {
		if got.Headers[k] != v {
			t.Errorf("%s: header %s = %q, want %q", want.name, k, got.Headers[k], v)
		}
	}
	err := consumer.VerifyID(gen, got)
	if explicit := want.msg.ID != uuid.Nil; explicit != errors.Is(err, consumer.ErrForgedID) || !explicit && err != nil {
		t.Errorf("%s: VerifyID: %v (an explicit message ID does not verify, a derived one does)", want.name, err)
	}
}

// contentExamples returns the content-ID examples of the spec, checking the
// name of each against the definition (type, base64 key, base64 body).
func contentExamples(t *testing.T) [][3]string {
	t.Helper()
	re := regexp.MustCompile(`^type ("[^"]*")\s+key ("[^"]*")\s+body ("[^"]*")\s+→\s+name (\S+)$`)
	var out [][3]string
	g := forge.MustNew(consumer.DefaultContentNamespace)
	for _, line := range strings.Split(between(t, spec(t), "spec-content"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("content example %q does not read as type … key … body … → name …", line)
		}
		var ex [3]string
		for i := range ex {
			var err error
			if ex[i], err = strconv.Unquote(m[i+1]); err != nil {
				t.Fatal(err)
			}
		}
		name := contentName(ex[0], []byte(ex[1]), []byte(ex[2]))
		if name != m[4] {
			t.Errorf("content example %q: the definition gives the name %s", line, name)
		}
		id, err := consumer.ContentID(g, ex[0], []byte(ex[1]), []byte(ex[2]))
		if err != nil || id != g.FromName([]byte(m[4])) {
			t.Errorf("content example %q: ContentID %s, %v; the spec's name gives %s", line, id, err, g.FromName([]byte(m[4])))
		}
		out = append(out, ex)
	}
	if len(out) == 0 {
		t.Fatal("no content-ID example")
	}
	return out
}

// contentName is the content-ID name of SPEC.md §8 written out by hand:
// ["<type>","<base64 key>","<base64 body>"] (the types used here need no
// escaping beyond encoding/json's).
func contentName(typ string, key, body []byte) string {
	q, _ := json.Marshal(typ)
	return "[" + string(q) + `,"` + base64.StdEncoding.EncodeToString(key) + `","` + base64.StdEncoding.EncodeToString(body) + `"]`
}

// contentID is the content ID the spec gives a message without an ID under
// the default generator.
func contentID(t *testing.T, typ string, key, body []byte) uuid.UUID {
	t.Helper()
	s := spec(t)
	if !strings.Contains(s, "namespace `\""+consumer.DefaultContentNamespace+"\"`") {
		t.Fatalf("the spec does not give %q as the default content namespace", consumer.DefaultContentNamespace)
	}
	return forge.MustNew(consumer.DefaultContentNamespace).FromName([]byte(contentName(typ, key, body)))
}

// collector is a handler that keeps copies of the messages it handles.
type collector struct {
	mu   sync.Mutex
	msgs []*consumer.Message
	n    chan struct{}
}

func newCollector() *collector { return &collector{n: make(chan struct{}, 100)} }

func (c *collector) Handle(_ context.Context, m *consumer.Message) error {
	cp := *m
	cp.Body = slices.Clone(m.Body)
	cp.Key = slices.Clone(m.Key)
	c.mu.Lock()
	c.msgs = append(c.msgs, &cp)
	c.mu.Unlock()
	c.n <- struct{}{}
	return nil
}

// run runs a consumer until the collector has n messages and until (when
// not nil) reports true, then stops it.
func (c *collector) run(t *testing.T, run func(context.Context) error, n int, until func() bool) []*consumer.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	timeout := time.After(60 * time.Second)
	for range n {
		select {
		case <-c.n:
		case err := <-done:
			cancel()
			t.Fatalf("consumer stopped: %v", err)
		case <-timeout:
			cancel()
			<-done
			t.Fatalf("consumer handled %d of %d messages", len(c.msgs), n)
		}
	}
	for until != nil && !until() {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("consumer stopped: %v", err)
		case <-timeout:
			cancel()
			<-done
			t.Fatal("consumer: condition not met in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("consumer: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// quiet keeps the consumers' logs (the dead letters of invalid IDs) out of
// the test output.
var quiet = consumer.WithLogger(slog.New(slog.DiscardHandler))

// byCase indexes messages by their x-case header, and checks that exactly
// the cases named were handled.
func byCase(t *testing.T, msgs []*consumer.Message, cases ...string) map[string]*consumer.Message {
	t.Helper()
	out := map[string]*consumer.Message{}
	for _, m := range msgs {
		c := m.Headers["x-case"]
		if out[c] != nil {
			t.Fatalf("case %q handled twice", c)
		}
		if !slices.Contains(cases, c) {
			t.Fatalf("case %q handled", c)
		}
		out[c] = m
	}
	for _, c := range cases {
		if out[c] == nil {
			t.Fatalf("case %q not handled", c)
		}
	}
	return out
}

// names returns the names of ms and the keys of foreign.
func names[F any](ms []*specMessage, foreign map[string]F, more ...string) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.name)
	}
	for k := range foreign {
		out = append(out, k)
	}
	return append(out, more...)
}

// TestSpecWireRabbitMQ publishes the spec's messages with rabbitpub, reads
// the deliveries with the AMQP client, and checks each field at the place
// the wire table gives for RabbitMQ, and that no other header is sent; then
// checks what rabbitsub reads back, and the content IDs of messages without
// an ID (key from the message-key header, never the routing key).
func TestSpecWireRabbitMQ(t *testing.T) {
	url := testenv.AMQPURL(t)
	ctx := testenv.Context(t, 90*time.Second)
	rows := wireTable(t)
	examples := contentExamples(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := testenv.Name(t, "spec-wire")
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
	})
	otherKey := q + ".other-route"
	if err := ch.QueueBind(q, otherKey, "amq.direct", false, nil); err != nil {
		t.Fatal(err)
	}

	gen := forge.MustNew("orders.example.com", forge.WithSecret("example-secret-do-not-use"))
	p, err := rabbitpub.New(url, gen, rabbitpub.WithQueue(q))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ms := specMessages(t, gen)
	for _, m := range ms {
		if err := p.Publish(m.ctx(ctx), m.msg); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	for _, m := range ms {
		d, ok, err := ch.Get(q, true)
		if err != nil || !ok {
			t.Fatalf("%s: get: %v, %v", m.name, ok, err)
		}
		var headers []string
		for h := range d.Headers {
			headers = append(headers, h)
		}
		checkWire(t, m, rows, func(r wire) string { return r.rabbit }, func(loc string) (string, bool) {
			switch loc {
			case "property `message-id`":
				return d.MessageId, d.MessageId != ""
			case "property `correlation-id`":
				return d.CorrelationId, d.CorrelationId != ""
			case "property `type`":
				return d.Type, d.Type != ""
			case "body":
				return string(d.Body), true
			}
			h, ok := headerName(loc)
			if !ok {
				t.Fatalf("wire table: RabbitMQ place %q is unknown to this test", loc)
			}
			v, found := d.Headers[h]
			s, isLong := v.(string)
			if found && !isLong {
				t.Errorf("%s: header %s is a %T, not a long string", m.name, h, v)
			}
			return s, found
		}, headers)
	}

	// What the consumer reads: the same messages again, and messages of
	// another producer without an ID.
	for _, m := range ms {
		if err := p.Publish(m.ctx(ctx), m.msg); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	type foreign struct {
		exchange, key string
		typ           string
		msgKey        any // the message-key header; nil: none
		body          string
	}
	ex := examples[0]
	foreigns := map[string]foreign{
		"example":              {"", q, ex[0], ex[1], ex[2]},
		"example, other route": {"amq.direct", otherKey, ex[0], ex[1], ex[2]},
		"example, byte array":  {"", q, ex[0], []byte(ex[1]), ex[2]},
		"no message-key":       {"", q, "t", nil, "hello"},
	}
	for name, f := range foreigns {
		h := amqp.Table{"x-case": name}
		if f.msgKey != nil {
			h[lineage.HeaderMessageKey] = f.msgKey
		}
		err := ch.PublishWithContext(ctx, f.exchange, f.key, true, false, amqp.Publishing{Type: f.typ, Headers: h, Body: []byte(f.body)})
		if err != nil {
			t.Fatal(err)
		}
	}
	// IDs in other forms, and headers named like the Kafka ones, which are
	// ordinary headers on RabbitMQ.
	id, corr, cause, other := uuid.New(), uuid.New(), uuid.New(), uuid.NewString()
	err = ch.PublishWithContext(ctx, "", q, true, false, amqp.Publishing{
		MessageId: "{" + strings.ToUpper(id.String()) + "}", CorrelationId: "urn:uuid:" + corr.String(), Type: "t",
		Headers: amqp.Table{"x-case": "id forms", lineage.HeaderCausationID: strings.ReplaceAll(cause.String(), "-", ""),
			lineage.HeaderMessageID: other, lineage.HeaderCorrelationID: other, lineage.HeaderMessageType: "not the type"},
		Body: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	// IDs that do not parse, or are the nil UUID: dead-lettered, never handled.
	for _, bad := range []string{"not-a-uuid", uuid.Nil.String()} {
		err = ch.PublishWithContext(ctx, "", q, true, false, amqp.Publishing{MessageId: bad, Type: "t",
			Headers: amqp.Table{"x-case": "malformed " + bad}, Body: []byte("b")})
		if err != nil {
			t.Fatal(err)
		}
	}
	deadLettered := func() bool {
		dq, err := ch.QueueDeclarePassive(q+consumer.DeadLetterSuffix, false, false, false, false, nil)
		return err == nil && dq.Messages == 2
	}
	col := newCollector()
	c, err := rabbitsub.New(url, q, col, rabbitsub.WithWorkers(1), rabbitsub.WithPrefetch(8), quiet)
	if err != nil {
		t.Fatal(err)
	}
	got := byCase(t, col.run(t, c.Run, len(ms)+len(foreigns)+1, deadLettered), names(ms, foreigns, "id forms")...)
	for _, m := range ms {
		checkReceived(t, gen, m, got[m.name])
	}
	if m := got["id forms"]; m.ID != id || m.CorrelationID != corr || m.CausationID != cause || m.ContentID || m.Type != "t" ||
		m.Headers[lineage.HeaderMessageID] != other || m.Headers[lineage.HeaderCorrelationID] != other || m.Headers[lineage.HeaderMessageType] != "not the type" {
		t.Errorf("IDs in other forms: ID %s corr %s caus %s type %q headers %q; want %s %s %s \"t\" and the headers passed on", m.ID, m.CorrelationID, m.CausationID, m.Type, m.Headers, id, corr, cause)
	}
	for name, f := range foreigns {
		m := got[name]
		var key []byte
		switch k := f.msgKey.(type) {
		case string:
			key = []byte(k)
		case []byte:
			key = k
		}
		if want := contentID(t, f.typ, key, []byte(f.body)); !m.ContentID || m.ID != want || m.CorrelationID != want || m.CausationID != uuid.Nil {
			t.Errorf("%s: ID %s (content ID %v), correlation %s, causation %s; the spec gives the content ID %s",
				name, m.ID, m.ContentID, m.CorrelationID, m.CausationID, want)
		}
		if err := consumer.VerifyID(gen, m); !errors.Is(err, consumer.ErrForgedID) {
			t.Errorf("%s: a content ID verifies: %v", name, err)
		}
	}
}

// TestSpecWireKafka is TestSpecWireRabbitMQ on Kafka: kafkapub's records
// read with kafka-go, then kafkasub's reading and the content IDs of
// records without an ID.
func TestSpecWireKafka(t *testing.T) {
	b := testenv.InProcessKafka(t)
	ctx := testenv.Context(t, 90*time.Second)
	rows := wireTable(t)
	examples := contentExamples(t)
	topic := testenv.Name(t, "spec-wire")
	if err := b.CreateTopic(ctx, topic, 1); err != nil { // one partition: records in publishing order
		t.Fatal(err)
	}
	gen := forge.MustNew("orders.example.com", forge.WithSecret("example-secret-do-not-use"))
	p, err := kafkapub.New(b.Brokers(), topic, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ms := specMessages(t, gen)
	for _, m := range ms {
		if err := p.Publish(m.ctx(ctx), m.msg); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: b.Brokers(), Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	t.Cleanup(func() { _ = r.Close() })
	for _, m := range ms {
		rec, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("%s: read: %v", m.name, err)
		}
		var headers []string
		for _, x := range rec.Headers {
			headers = append(headers, x.Key)
		}
		checkWire(t, m, rows, func(r wire) string { return r.kafka }, func(loc string) (string, bool) {
			switch loc {
			case "record key":
				return string(rec.Key), len(rec.Key) > 0
			case "record value":
				return string(rec.Value), true
			}
			h, ok := headerName(loc)
			if !ok {
				t.Fatalf("wire table: Kafka place %q is unknown to this test", loc)
			}
			var got string
			found := false
			for _, x := range rec.Headers {
				if x.Key == h {
					if found {
						t.Errorf("%s: header %s twice", m.name, h)
					}
					got, found = string(x.Value), true
				}
			}
			return got, found
		}, headers)
	}

	// Records of another producer without an ID.
	ex := examples[0]
	h := func(kv ...string) []kafkago.Header {
		var out []kafkago.Header
		for i := 0; i < len(kv); i += 2 {
			out = append(out, kafkago.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return out
	}
	type foreign struct {
		rec            kafkago.Message
		typ, key, body string // what the spec reads
	}
	foreigns := map[string]foreign{
		"example": {kafkago.Message{Key: []byte(ex[1]), Value: []byte(ex[2]),
			Headers: h("x-case", "example", lineage.HeaderMessageType, ex[0])}, ex[0], ex[1], ex[2]},
		// On Kafka a message-key header is an ordinary header: the key is the record key.
		"message-key header": {kafkago.Message{Value: []byte("hello"),
			Headers: h("x-case", "message-key header", lineage.HeaderMessageType, "t", lineage.HeaderMessageKey, "k1")}, "t", "", "hello"},
		// The last of repeated headers counts; an empty message ID is none.
		"repeated headers": {kafkago.Message{Key: []byte("k"), Value: []byte("v"),
			Headers: h("x-case", "repeated headers", lineage.HeaderMessageType, "first", lineage.HeaderMessageType, "t",
				lineage.HeaderMessageID, uuid.NewString(), lineage.HeaderMessageID, "")}, "t", "k", "v"},
	}
	w := &kafkago.Writer{Addr: kafkago.TCP(b.Brokers()...), Topic: topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	t.Cleanup(func() { _ = w.Close() })
	for name, f := range foreigns {
		if err := w.WriteMessages(ctx, f.rec); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	col := newCollector()
	c, err := kafkasub.New(b.Brokers(), topic, testenv.Name(t, "spec-wire"), col, quiet)
	if err != nil {
		t.Fatal(err)
	}
	got := byCase(t, col.run(t, c.Run, len(ms)+len(foreigns), nil), names(ms, foreigns)...)
	for _, m := range ms {
		checkReceived(t, gen, m, got[m.name])
	}
	for name, f := range foreigns {
		m := got[name]
		if want := contentID(t, f.typ, []byte(f.key), []byte(f.body)); !m.ContentID || m.ID != want || m.CorrelationID != want || m.CausationID != uuid.Nil {
			t.Errorf("%s: ID %s (content ID %v), correlation %s, causation %s; the spec gives the content ID %s",
				name, m.ID, m.ContentID, m.CorrelationID, m.CausationID, want)
		}
		if err := consumer.VerifyID(gen, m); !errors.Is(err, consumer.ErrForgedID) {
			t.Errorf("%s: a content ID verifies: %v", name, err)
		}
	}
	if m := got["message-key header"]; m.Headers[lineage.HeaderMessageKey] != "k1" {
		t.Errorf("a message-key header on Kafka is not passed on as an ordinary header: %q", m.Headers)
	}
}
