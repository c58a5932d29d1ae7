package kafkasub

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

func header(m kafkago.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// TestDeadLetterFormatMatchesDoc: the headers the package doc lists for a
// dead letter are exactly the ones added, and the omitted-parts values it
// names are the ones written (an operator tool reads them).
func TestDeadLetterFormatMatchesDoc(t *testing.T) {
	f, err := os.Open("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	row := regexp.MustCompile(`^//\t(x-[a-z-]+)\s`)
	var doc strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		doc.WriteString(sc.Text() + "\n")
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			documented[m[1]] = true
		}
	}
	rec := kafkago.Message{Topic: "orders", Partition: 2, Offset: 41, Key: []byte("k"), Value: []byte("body"),
		Headers: []kafkago.Header{{Key: lineage.HeaderMessageID, Value: []byte("not-a-uuid")}, {Key: "tenant", Value: []byte("7")}}}
	full := deadLetterRecord(rec, 3, errors.New("boom"), dlFull)
	added := map[string]bool{}
	for _, h := range full.Headers {
		if h.Key != lineage.HeaderMessageID && h.Key != "tenant" {
			added[h.Key] = true
		}
	}
	for k := range added {
		if !documented[k] {
			t.Errorf("header %s is added but not documented", k)
		}
	}
	for k := range documented {
		if !added[k] {
			t.Errorf("header %s is documented but not added", k)
		}
	}
	for want, got := range map[string]string{"orders": "x-original-topic", "2": "x-original-partition", "41": "x-original-offset", "3": "x-attempts", "boom": consumer.HeaderDeadLetterReason} {
		if v, _ := header(full, got); v != want {
			t.Errorf("%s = %q, want %q", got, v, want)
		}
	}
	ref := deadLetterRecord(rec, 3, errors.New("boom"), dlReference)
	min := deadLetterRecord(rec, 3, errors.New("boom"), dlMinimal)
	for _, tc := range []struct {
		m       kafkago.Message
		omitted string
		key     bool
		tenant  bool
	}{{ref, "body", true, true}, {min, "body,key,headers", false, false}} {
		v, _ := header(tc.m, consumer.HeaderDeadLetterOmitted)
		if v != tc.omitted || !strings.Contains(doc.String(), `"`+tc.omitted+`"`) {
			t.Errorf("%s = %q, want %q, documented", consumer.HeaderDeadLetterOmitted, v, tc.omitted)
		}
		_, tenant := header(tc.m, "tenant")
		if tc.m.Value != nil || (tc.m.Key != nil) != tc.key || tenant != tc.tenant {
			t.Errorf("%s dead letter: value %q, key %q, tenant header %v", tc.omitted, tc.m.Value, tc.m.Key, tenant)
		}
		if id, _ := header(tc.m, lineage.HeaderMessageID); id != "not-a-uuid" {
			t.Errorf("%s dead letter lost the message-id header", tc.omitted)
		}
	}
}

// FuzzDeadLetterRecord: whatever the original record and reason, the full
// form keeps key and body, the reference drops the body, and the minimal
// reference is small (bounded by the reason limit and the ID headers), so
// it fits any broker's default limit; reasons stay valid UTF-8.
func FuzzDeadLetterRecord(f *testing.F) {
	f.Add([]byte("k"), []byte("body"), "not-a-uuid", "tenant", "7", "boom")
	f.Add([]byte(nil), bytes.Repeat([]byte{0xff}, 5000), strings.Repeat("é", 3000), "h", strings.Repeat("x", 9000), strings.Repeat("\xff", 9000))
	f.Fuzz(func(t *testing.T, key, value []byte, id, hk, hv, reason string) {
		rec := kafkago.Message{Topic: "t", Key: key, Value: value, Headers: []kafkago.Header{
			{Key: lineage.HeaderMessageID, Value: []byte(id)}, {Key: hk, Value: []byte(hv)}}}
		full := deadLetterRecord(rec, 1, errors.New(reason), dlFull)
		if !bytes.Equal(full.Key, key) || !bytes.Equal(full.Value, value) {
			t.Fatal("the full dead letter changed key or body")
		}
		if r, _ := header(full, consumer.HeaderDeadLetterReason); !utf8.ValidString(r) || len(r) > consumer.MaxReasonBytes {
			t.Fatalf("reason of %d bytes, valid UTF-8: %v", len(r), utf8.ValidString(r))
		}
		if ref := deadLetterRecord(rec, 1, errors.New(reason), dlReference); ref.Value != nil || !bytes.Equal(ref.Key, key) {
			t.Fatal("the reference dead letter kept the body or lost the key")
		}
		min := deadLetterRecord(rec, 1, errors.New(reason), dlMinimal)
		size := len(min.Key) + len(min.Value)
		for _, h := range min.Headers {
			size += len(h.Key) + len(h.Value)
		}
		if bound := consumer.MaxReasonBytes + 4*(maxReferenceHeader+len(lineage.HeaderCorrelationID)) + 256; size > bound {
			t.Fatalf("minimal dead letter of %d bytes, bound %d", size, bound)
		}
	})
}
