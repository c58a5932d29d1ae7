package kafkapub_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

var gen = forge.MustNew("orders.example.com")

func newPublisher(t *testing.T, brokers []string, topic string, opts ...publisher.Option) *kafkapub.Publisher {
	t.Helper()
	p, err := kafkapub.New(brokers, topic, gen, append([]publisher.Option{kafkapub.WithAutoTopicCreation()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type record struct {
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       string `json:"key"`
	Payload   string `json:"payload"`
	Headers   []string
	RawHdrs   json.RawMessage `json:"headers"`
}

func (r record) header(name string) string {
	for i := 0; i+1 < len(r.Headers); i += 2 {
		if r.Headers[i] == name {
			return r.Headers[i+1]
		}
	}
	return ""
}

// readWithKcat reads every record of topic with kcat, an independent client.
func readWithKcat(t *testing.T, brokers []string, topic string) []record {
	t.Helper()
	kcat := testenv.Tool(t, "kcat")
	ctx := testenv.Context(t, 30*time.Second)
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", strings.Join(brokers, ","), "-t", topic, "-o", "beginning", "-e", "-q", "-J").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	var recs []record
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("kcat line %q: %v", line, err)
		}
		if len(r.RawHdrs) > 0 && r.RawHdrs[0] == '[' {
			json.Unmarshal(r.RawHdrs, &r.Headers)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestRecordsReadByIndependentClient(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, brokers, topic)
	ctx := testenv.Context(t, 30*time.Second)

	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.created"}
	derived := publisher.Message{Type: "invoice.requested", Key: []any{"o-1001"}, Body: []byte(`{"total":12}`), Headers: map[string]string{"tenant": "acme"}}
	if err := p.Publish(lineage.NewContext(ctx, parent), derived); err != nil {
		t.Fatalf("publish: %v", err)
	}
	root := publisher.Message{Type: "fx.rate", Key: []any{"EUR", 12345}, Body: []byte("1.08")}
	if err := p.Publish(ctx, root); err != nil {
		t.Fatalf("publish: %v", err)
	}
	recs := readWithKcat(t, brokers, topic)
	if len(recs) != 2 {
		t.Fatalf("kcat read %d records, want 2: %+v", len(recs), recs)
	}
	byType := map[string]record{}
	for _, r := range recs {
		byType[r.header(lineage.HeaderMessageType)] = r
	}
	d := byType["invoice.requested"]
	wantID := gen.MustID(parent.MessageID, "invoice.requested", "o-1001").String()
	if d.header(lineage.HeaderMessageID) != wantID || d.header(lineage.HeaderCorrelationID) != parent.CorrelationID.String() ||
		d.header(lineage.HeaderCausationID) != parent.MessageID.String() || d.header("tenant") != "acme" ||
		d.Key != "o-1001" || d.Payload != `{"total":12}` {
		t.Errorf("derived record as read by kcat: %+v (want id %s)", d, wantID)
	}
	r := byType["fx.rate"]
	rootID := gen.MustID("fx.rate", "EUR", 12345).String()
	if r.header(lineage.HeaderMessageID) != rootID || r.header(lineage.HeaderCorrelationID) != rootID ||
		r.header(lineage.HeaderCausationID) != "" || r.Key != `["EUR",12345]` {
		t.Errorf("root record as read by kcat: %+v (want id %s)", r, rootID)
	}
}

func TestKeyKeepsOrderInOnePartition(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, brokers, topic)
	ctx := testenv.Context(t, 30*time.Second)
	var msgs []publisher.Message
	for seq := range 40 {
		msgs = append(msgs, publisher.Message{Type: "order.updated", Key: []any{fmt.Sprintf("o-%d", seq%8)}, Body: []byte(fmt.Sprint(seq))})
	}
	if err := p.PublishBatch(ctx, msgs[:20]...); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs[20:] {
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	recs := readWithKcat(t, brokers, topic)
	if len(recs) != 40 {
		t.Fatalf("read %d records, want 40", len(recs))
	}
	part := map[string]int{}
	parts := map[int]bool{}
	last := map[string]int{}
	// kcat reads each partition in offset order.
	for _, r := range recs {
		if p, ok := part[r.Key]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		part[r.Key] = r.Partition
		parts[r.Partition] = true
		var seq int
		fmt.Sscan(r.Payload, &seq)
		if prev, ok := last[r.Key]; ok && seq < prev {
			t.Errorf("key %s: %d after %d", r.Key, seq, prev)
		}
		last[r.Key] = seq
	}
	if len(parts) < 2 {
		t.Errorf("8 keys all landed in %d partition(s): the balancer ignores keys?", len(parts))
	}
}

func TestSameIncomingMessageGivesSameIDs(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, brokers, topic)
	ctx := testenv.Context(t, 30*time.Second)
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New()}
	for range 2 {
		if err := p.Publish(lineage.NewContext(ctx, parent), publisher.Message{Type: "invoice.requested", Key: []any{"o-7"}}); err != nil {
			t.Fatal(err)
		}
	}
	recs := readWithKcat(t, brokers, topic)
	if len(recs) != 2 || recs[0].header(lineage.HeaderMessageID) != recs[1].header(lineage.HeaderMessageID) || recs[0].header(lineage.HeaderMessageID) == "" {
		t.Fatalf("records: %+v", recs)
	}
}

func TestBadInputSendsNothing(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, brokers, topic, publisher.WithMaxBodySize(100))
	ctx := testenv.Context(t, 30*time.Second)
	tests := []struct {
		name string
		msg  publisher.Message
	}{
		{"missing type", publisher.Message{Key: []any{"k"}}},
		{"empty header name", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"": "v"}}},
		{"reserved header", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{lineage.HeaderMessageID: "v"}}},
		{"header not utf8", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"h\xff": "v"}}},
		{"body over max", publisher.Message{Type: "t", Key: []any{"k"}, Body: make([]byte, 101)}},
		{"invalid explicit id", publisher.Message{Type: "t", ID: uuid.Max}},
		{"unencodable key", publisher.Message{Type: "t", Key: []any{"a", make(chan int)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Publish(ctx, tt.msg); !errors.Is(err, publisher.ErrInvalid) {
				t.Errorf("Publish = %v, want ErrInvalid", err)
			}
			if err := p.PublishBatch(ctx, publisher.Message{Type: "ok", Key: []any{"k"}}, tt.msg); !errors.Is(err, publisher.ErrInvalid) {
				t.Errorf("PublishBatch = %v, want ErrInvalid", err)
			}
		})
	}
	// One good record so the topic exists, then only it may be there.
	if err := p.Publish(ctx, publisher.Message{Type: "marker", Key: []any{"m"}}); err != nil {
		t.Fatal(err)
	}
	if recs := readWithKcat(t, brokers, topic); len(recs) != 1 {
		t.Errorf("%d records in the topic, want only the marker", len(recs))
	}
}

func TestDeadBrokerRespectsDeadline(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there
	p, err := kafkapub.New([]string{addr}, "t", gen)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"k"}})
	var pe *publisher.PublishError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &pe) || pe.Attempts < 2 {
		t.Errorf("Publish = %v, want a deadline error after several attempts", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("returned after %v", el)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := p.PublishBatch(ctx2, publisher.Message{Type: "t", Key: []any{"a"}}, publisher.Message{Type: "t", Key: []any{"b"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PublishBatch = %v, want a deadline error", err)
	}
	t.Log(err)
}

// TestRetriesAcrossBrokerRestart publishes while the broker is down; the
// publish succeeds once the broker is back on the same address.
func TestRetriesAcrossBrokerRestart(t *testing.T) {
	// The in-process broker even when KAFKA_BROKERS names a real cluster:
	// the test stops and restarts it.
	k := testenv.InProcessKafka(t, testenv.KafkaPorts(freePort(t)))
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, k.Brokers(), topic)
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"before"}}); err != nil {
		t.Fatal(err)
	}
	k.Close()
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		restarted <- k.Restart()
	}()
	err := p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"during-1"}}, publisher.Message{Type: "t", Key: []any{"during-2"}})
	if rerr := <-restarted; rerr != nil {
		t.Fatalf("restart: %v", rerr)
	}
	if err != nil {
		t.Fatalf("publish across restart: %v", err)
	}
	if r := kafkapub.Retries(p); r == 0 {
		t.Errorf("no retry recorded while the broker was down")
	}
	recs := readWithKcat(t, k.Brokers(), topic)
	keys := map[string]int{}
	for _, r := range recs {
		keys[r.Key]++
	}
	if keys["during-1"] == 0 || keys["during-2"] == 0 {
		t.Errorf("records after restart: %v", keys)
	}
}

func TestKeyBytes(t *testing.T) {
	tests := []struct {
		name string
		key  []any
		want []byte
	}{
		{"none", nil, nil},
		{"one string", []any{"o-1001"}, []byte("o-1001")},
		{"one bytes", []any{[]byte{0, 1}}, []byte{0, 1}},
		{"one int", []any{42}, []byte("[42]")},
		{"several", []any{"EUR", 12345, true}, []byte(`["EUR",12345,true]`)},
		{"uuid", []any{uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "x"}, []byte(`["6ba7b810-9dad-11d1-80b4-00c04fd430c8","x"]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := publisher.KeyBytes(tt.key)
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("KeyBytes(%v) = %q, %v; want %q", tt.key, got, err, tt.want)
			}
		})
	}
	if _, err := publisher.KeyBytes([]any{1 << 60, "x"}); err == nil {
		t.Error("unsafe integer accepted")
	}
}

func TestOptionsValidated(t *testing.T) {
	for name, opt := range map[string]publisher.Option{
		"acks":              kafkapub.WithAcks(0),
		"acks high":         kafkapub.WithAcks(4),
		"partitioner":       kafkapub.WithPartitioner(0),
		"batch":             kafkapub.WithBatchSize(0),
		"write":             kafkapub.WithWriteTimeout(0),
		"tls":               kafkapub.WithTLS(nil),
		"sasl":              kafkapub.WithSASL(nil),
		"client id":         kafkapub.WithClientID(""),
		"transport nil":     kafkapub.WithTransportConfig(nil),
		"transport dial":    kafkapub.WithTransportConfig(func(tr *kafkago.Transport) { tr.DialTimeout = -1 }),
		"transport topics":  kafkapub.WithTransportConfig(func(tr *kafkago.Transport) { tr.MetadataTopics = []string{"other"} }),
		"body":              publisher.WithMaxBodySize(0),
		"backoff":           publisher.WithBackoff(0, time.Second),
		"consumer's option": publisher.TransportOption("kafkasub.WithX", func(*struct{}) error { return nil }),
	} {
		if _, err := kafkapub.New([]string{"x:9092"}, "t", gen, opt); err == nil {
			t.Errorf("%s: invalid option accepted", name)
		} else if !strings.HasPrefix(err.Error(), "kafkapub: ") {
			t.Errorf("%s: error %q does not start with the package name", name, err)
		}
	}
	if _, err := kafkapub.New(nil, "t", gen); err == nil {
		t.Error("no brokers accepted")
	}
	if _, err := kafkapub.New([]string{"x:9092"}, "", gen); err == nil {
		t.Error("empty topic accepted")
	}
	var seen *kafkago.Transport
	p, err := kafkapub.New([]string{"x:9092"}, "t", gen, kafkapub.WithTLS(&tls.Config{ServerName: "kafka"}),
		kafkapub.WithSASL(plain.Mechanism{Username: "u", Password: "p"}), kafkapub.WithClientID("orders-api"),
		kafkapub.WithAcks(kafkapub.AcksLeader), kafkapub.WithPartitioner(kafkapub.PartitionMurmur2),
		kafkapub.WithTransportConfig(func(tr *kafkago.Transport) { seen = tr }))
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.TLS == nil || seen.TLS.ServerName != "kafka" || seen.SASL == nil || seen.ClientID != "orders-api" {
		t.Errorf("the transport escape hatch saw %+v, want the TLS, SASL and client ID options applied", seen)
	}
	if seen.MetadataTTL != kafkapub.DefaultMetadataTTL {
		t.Errorf("the transport escape hatch saw MetadataTTL %v, want DefaultMetadataTTL", seen.MetadataTTL)
	}
	zero, err := kafkapub.New([]string{"x:9092"}, "t", gen, kafkapub.WithTransportConfig(func(tr *kafkago.Transport) { tr.MetadataTTL = 0 }))
	if err != nil {
		t.Errorf("MetadataTTL 0 (kafka-go's default) refused: %v", err)
	} else {
		zero.Close()
	}
	p.Close()
	if err := p.Publish(context.Background(), publisher.Message{Type: "t", Key: []any{1}}); !errors.Is(err, publisher.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
}

func TestConcurrentPublish(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, brokers, topic)
	ctx := testenv.Context(t, 30*time.Second)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 25 {
				m := publisher.Message{Type: "t", Key: []any{fmt.Sprintf("g%d", g), i}}
				var err error
				if i%5 == 0 {
					err = p.PublishBatch(ctx, m)
				} else {
					err = p.Publish(ctx, m)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{}
	for _, r := range readWithKcat(t, brokers, topic) {
		ids[r.header(lineage.HeaderMessageID)] = true
	}
	for g := range 8 {
		for i := range 25 {
			if !ids[gen.MustID("t", fmt.Sprintf("g%d", g), i).String()] {
				t.Fatalf("message g%d/%d missing", g, i)
			}
		}
	}
}

// TestErrorsNameThePackageOnce: the errors of bad input and of a closed
// publisher start with "kafkapub: " (a batch's then name the message) and
// carry each package's prefix once.
func TestErrorsNameThePackageOnce(t *testing.T) {
	p, err := kafkapub.New([]string{"127.0.0.1:1"}, "t", gen) // no I/O before the checks
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok, bad := publisher.Message{Type: "ok", Key: []any{"k"}}, publisher.Message{Key: []any{"k"}}
	check := func(what string, err, sentinel error, prefix string) {
		t.Helper()
		s := fmt.Sprint(err)
		if !errors.Is(err, sentinel) || !strings.HasPrefix(s, prefix) ||
			strings.Count(s, "kafkapub: ") != 1 || strings.Count(s, "publisher: ") != 1 {
			t.Errorf("%s = %q, want %v starting with %q, each prefix once", what, s, sentinel, prefix)
		}
	}
	check("Publish", p.Publish(ctx, bad), publisher.ErrInvalid, `kafkapub: publisher: message "": missing type`)
	check("PublishBatch", p.PublishBatch(ctx, ok, bad), publisher.ErrInvalid, `kafkapub: batch message 1: publisher: message "": missing type`)
	check("PublishBatch routing key", p.PublishBatch(ctx, publisher.Message{Type: "t", Key: []any{"k"}, RoutingKey: "r"}),
		publisher.ErrInvalid, `kafkapub: batch message 0: publisher: message "t": a routing key`)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	check("Publish after Close", p.Publish(ctx, ok), publisher.ErrClosed, "kafkapub: publisher: closed")
}
