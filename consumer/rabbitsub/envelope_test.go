package rabbitsub

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

func fullDelivery() amqp.Delivery {
	return amqp.Delivery{
		Headers: amqp.Table{"b": true, "B": byte(1), "i8": int8(-1), "i16": int16(-2), "u16": uint16(3),
			"i32": int32(-4), "u32": uint32(5), "i64": int64(-6), "f32": float32(1.5), "f64": 2.5,
			"dec": amqp.Decimal{Scale: 2, Value: 314}, "ts": time.Unix(1700000000, 0), "s": "str",
			"x": []byte{0, 1}, "a": []any{"x", int32(1), nil}, "t": amqp.Table{"k": "v"}, "v": nil},
		ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: 1, Priority: 7,
		CorrelationId: "corr", ReplyTo: "reply", Expiration: "60000", MessageId: "id\xff\xfe",
		Timestamp: time.Unix(1700000001, 0), Type: "order.created", UserId: "guest", AppId: "app",
		Exchange: "shop", RoutingKey: "order.\x80", Body: []byte{0, 1, 2, 0xff, '"', '\\'},
	}
}

// An envelope holds everything of the original, non-UTF-8 strings and
// every header type included, and ParseDeadLetter gives it back.
func TestEnvelopeRoundTrip(t *testing.T) {
	d := fullDelivery()
	raw, err := appendTable(nil, d.Headers)
	if err != nil {
		t.Fatal(err)
	}
	env, err := appendEnvelope(&d, raw, "reason ✓", 3, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(env) {
		t.Fatalf("not JSON: %s", env)
	}
	dl, err := ParseDeadLetter(amqp.Delivery{ContentType: EnvelopeContentType, Body: env})
	if err != nil {
		t.Fatal(err)
	}
	want := DeadLetter{
		Message:  publishingOf(&d),
		Exchange: d.Exchange, RoutingKey: d.RoutingKey, Reason: "reason ✓", Attempts: 3, Queue: "orders",
		Envelope: true, RawHeaders: raw,
	}
	want.Message.Headers = d.Headers
	if !reflect.DeepEqual(dl, want) {
		t.Fatalf("got  %+v\nwant %+v", dl, want)
	}
}

// Every field name the package documentation gives for the envelope is one
// the envelope has, and the other way round.
func TestEnvelopeMatchesSpec(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src)
	start := strings.Index(doc, "//\t{\n")
	end := strings.Index(doc[start:], "//\t}\n")
	if start < 0 || end < 0 {
		t.Fatal("no envelope example in doc.go")
	}
	var documented []string
	for _, m := range regexp.MustCompile(`"([a-z_0-9]+)":`).FindAllStringSubmatch(doc[start:start+end], -1) {
		documented = append(documented, m[1])
	}
	d := fullDelivery()
	env, err := appendEnvelope(&d, []byte{0, 0, 0, 0}, "r", 1, "q")
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(env, &obj); err != nil {
		t.Fatal(err)
	}
	var written []string
	for k, v := range obj {
		written = append(written, k)
		if k == "properties" || k == "base64_strings" {
			for p := range v.(map[string]any) {
				written = append(written, p)
			}
		}
	}
	slices.Sort(documented)
	slices.Sort(written)
	documented, written = slices.Compact(documented), slices.Compact(written)
	if !slices.Equal(documented, written) {
		t.Fatalf("documented %v\nwritten    %v", documented, written)
	}
	if !strings.Contains(doc, EnvelopeContentType) && !strings.Contains(doc, "EnvelopeContentType") {
		t.Fatal("content type not documented")
	}
}

func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add("id", "corr", "type", "shop", "key", []byte("body"), int64(1700000000), "reason")
	f.Add("\xff", "", "", "", "\x80", []byte{}, int64(0), "")
	f.Fuzz(func(t *testing.T, id, corr, typ, exchange, key string, body []byte, ts int64, reason string) {
		for _, s := range []*string{&id, &corr, &typ, &exchange, &key} {
			if len(*s) > 255 {
				*s = (*s)[:255]
			}
		}
		reason = strings.ToValidUTF8(reason, "?") // reasons are valid UTF-8 (consumer.Reason)
		d := amqp.Delivery{MessageId: id, CorrelationId: corr, Type: typ, Exchange: exchange, RoutingKey: key, Body: body}
		if ts != 0 {
			d.Timestamp = time.Unix(ts, 0)
		}
		env, err := appendEnvelope(&d, nil, reason, 1, "q")
		if err != nil {
			t.Fatal(err)
		}
		dl, err := ParseDeadLetter(amqp.Delivery{ContentType: EnvelopeContentType, Body: env})
		if err != nil {
			t.Fatal(err)
		}
		m := dl.Message
		if m.MessageId != id || m.CorrelationId != corr || m.Type != typ || dl.Exchange != exchange || dl.RoutingKey != key ||
			!bytes.Equal(m.Body, body) || !m.Timestamp.Equal(d.Timestamp) || dl.Attempts != 1 || dl.Queue != "q" {
			t.Fatalf("round trip: %+v", dl)
		}
		if reason != dl.Reason {
			t.Fatalf("reason %q, want %q", dl.Reason, reason)
		}
	})
}

// ParseDeadLetter never panics, whatever the envelope holds.
func FuzzParseDeadLetter(f *testing.F) {
	d := fullDelivery()
	raw, _ := appendTable(nil, d.Headers)
	env, _ := appendEnvelope(&d, raw, "r", 1, "q")
	f.Add(env)
	f.Add([]byte(`{"version":1,"headers":"AAAABQFrVg==","body":"eA=="}`))
	f.Add([]byte(`{"version":1,"base64_strings":{"nope":"eA=="}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = ParseDeadLetter(amqp.Delivery{ContentType: EnvelopeContentType, Body: body})
	})
}

func TestParseDeadLetterPlainAndBroker(t *testing.T) {
	plain := amqp.Delivery{
		Headers: amqp.Table{"tenant": int32(7), consumer.HeaderDeadLetterReason: "why", consumer.HeaderOriginalQueue: "orders",
			consumer.HeaderAttempts: "4", consumer.HeaderDeadLetterID: "x"},
		MessageId: "m", DeliveryMode: amqp.Persistent, Body: []byte("b"),
	}
	dl, err := ParseDeadLetter(plain)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Envelope || dl.Reason != "why" || dl.Queue != "orders" || dl.Attempts != 4 || dl.Message.MessageId != "m" ||
		!reflect.DeepEqual(dl.Message.Headers, amqp.Table{"tenant": int32(7)}) || string(dl.Message.Body) != "b" {
		t.Fatalf("plain: %+v", dl)
	}
	broker := amqp.Delivery{Headers: amqp.Table{"x-death": []any{amqp.Table{"reason": "delivery_limit", "queue": "orders",
		"exchange": "shop", "routing-keys": []any{"order.created"}}}}}
	dl, err = ParseDeadLetter(broker)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Reason != "dead-lettered by the broker: delivery_limit" || dl.Queue != "orders" || dl.Exchange != "shop" || dl.RoutingKey != "order.created" {
		t.Fatalf("broker: %+v", dl)
	}
	if _, err := ParseDeadLetter(amqp.Delivery{Body: []byte("x")}); err != ErrNotDeadLetter {
		t.Fatalf("ordinary message: %v", err)
	}
	deep := []byte{0, 0, 0, 0}
	for range envelopeMaxDepth + 1 {
		deep = append(append(binaryTableHeader(len(deep)+3), 'n', 'F'), deep...)
	}
	d := amqp.Delivery{MessageId: "m"}
	env, _ := appendEnvelope(&d, deep, "r", 0, "q")
	dl, err = ParseDeadLetter(amqp.Delivery{ContentType: EnvelopeContentType, Body: env})
	if err == nil || dl.Message.MessageId != "m" || !bytes.Equal(dl.RawHeaders, deep) {
		t.Fatalf("too deep: %v, %+v", err, dl.Message)
	}
}

// binaryTableHeader returns a table length of n bytes followed by a key of
// length 1 (the caller appends the key and the value).
func binaryTableHeader(n int) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 1}
}

// The dead letter is a plain copy when it can be, an envelope when its
// headers would not fit, when the original's headers were unreadable, or
// when it carries a user ID; an envelope's headers always fit.
func TestDeadLetterForm(t *testing.T) {
	c := &Consumer{queue: "orders"}
	long := strings.Repeat("r", consumer.MaxReasonBytes)
	for name, tc := range map[string]struct {
		d        amqp.Delivery
		raw      []byte
		frameMax int
		envelope bool
	}{
		"small":            {amqp.Delivery{MessageId: "m", Headers: amqp.Table{"h": "v"}}, nil, 131072, false},
		"user id":          {amqp.Delivery{MessageId: "m", UserId: "alice"}, nil, 131072, true},
		"unreadable":       {amqp.Delivery{MessageId: "m"}, []byte{0, 0, 0, 0}, 131072, true},
		"headers too big":  {amqp.Delivery{MessageId: "m", Headers: amqp.Table{"h": strings.Repeat("h", 130000)}}, nil, 131072, true},
		"smallest frames":  {amqp.Delivery{MessageId: strings.Repeat("m", 255), Type: strings.Repeat("t", 255), Headers: amqp.Table{"h": strings.Repeat("h", 1000)}}, nil, 4096, true},
		"reason too large": {amqp.Delivery{CorrelationId: strings.Repeat("c", 255), AppId: strings.Repeat("a", 255)}, nil, 4096, true},
	} {
		t.Run(name, func(t *testing.T) {
			pub, id, err := c.deadLetter(&tc.d, tc.raw, long, 2, tc.frameMax)
			if err != nil {
				t.Fatal(err)
			}
			if got := pub.ContentType == EnvelopeContentType; got != tc.envelope {
				t.Fatalf("envelope %v, want %v", got, tc.envelope)
			}
			if pub.Headers[consumer.HeaderDeadLetterID] != id || pub.UserId != "" || pub.Expiration != "" {
				t.Fatalf("headers %v, user ID %q, expiration %q", pub.Headers, pub.UserId, pub.Expiration)
			}
			size, err := rabbitmq.HeaderFrameSize(&pub)
			if err != nil || size > tc.frameMax {
				t.Fatalf("header frame of %d bytes, frame_max %d (%v)", size, tc.frameMax, err)
			}
			dl, err := ParseDeadLetter(amqp.Delivery{ContentType: pub.ContentType, Headers: pub.Headers, Body: pub.Body, MessageId: pub.MessageId})
			if err != nil || dl.Reason != long || dl.Attempts != 2 || dl.Queue != "orders" || dl.Message.UserId != tc.d.UserId {
				t.Fatalf("parsed: %v, reason of %d bytes, %+v", err, len(dl.Reason), dl)
			}
			if reason := pub.Headers[consumer.HeaderDeadLetterReason].(string); reason != long && !strings.Contains(reason, "reason truncated") {
				t.Fatalf("reason header of %d bytes without a marker", len(reason))
			}
		})
	}
}

// The consumer's message refers to the delivery's body, and an envelope
// is built with one allocation of about 4/3 of the body.
func TestNoBodyCopies(t *testing.T) {
	c := &Consumer{queue: "q"}
	d := amqp.Delivery{MessageId: "m", Body: bytes.Repeat([]byte("x"), 10<<20)}
	if m := c.message(&d); &m.Body[0] != &d.Body[0] {
		t.Fatal("the message's body is a copy of the delivery's")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	env, err := appendEnvelope(&d, nil, "r", 1, "q")
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	if limit := uint64(len(env)) + 64<<10; allocated > limit {
		t.Fatalf("an envelope of %d bytes allocated %d bytes", len(env), allocated)
	}
	t.Logf("envelope of %d bytes for a body of %d: %d bytes allocated", len(env), len(d.Body), allocated)
}
