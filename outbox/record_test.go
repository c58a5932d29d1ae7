package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// FuzzRecordMessage: whatever message a publisher accepts, the record
// stored for it, sent again with Record.Message, gets the same IDs and the
// same wire key.
func FuzzRecordMessage(f *testing.F) {
	f.Add("order.placed", "SO-1", []byte(nil), []byte("{}"), "tenant", "acme", false)
	f.Add("order.placed", "", []byte{0, 1, 2}, []byte(nil), "", "", true)
	f.Add("note", "", []byte(nil), []byte("body only"), "h", "", false)
	f.Add("é", "ключ", []byte(nil), []byte{}, "x-trace", "00-ab", true)
	f.Add("t", "", []byte(nil), []byte(nil), "", "", true)
	f.Fuzz(func(t *testing.T, typ, strKey string, byteKey, body []byte, hName, hValue string, withParent bool) {
		m := publisher.Message{Type: typ, Body: body}
		switch {
		case strKey != "":
			m.Key = []any{strKey}
		case byteKey != nil:
			m.Key = []any{byteKey}
		}
		if hName != "" {
			m.Headers = map[string]string{hName: hValue}
		}
		ctx := context.Background()
		if withParent {
			ctx = lineage.NewContext(ctx, lineage.Lineage{MessageID: uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
				CorrelationID: uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8")})
		}
		l, err := publisher.IDs(ctx, gen, &m)
		if err != nil {
			if !errors.Is(err, publisher.ErrInvalid) {
				t.Fatalf("IDs: %v, want ErrInvalid", err)
			}
			return
		}
		key, err := publisher.KeyBytes(m.Key)
		if err != nil {
			return
		}
		rec := outbox.Record{ID: l.MessageID, CorrelationID: l.CorrelationID, CausationID: l.CausationID,
			Type: m.Type, Key: key, Headers: m.Headers, Body: m.Body}
		again := rec.Message()
		l2, err := publisher.IDs(context.Background(), gen, &again)
		if err != nil {
			t.Fatalf("the record's message is invalid: %v", err)
		}
		if l2.MessageID != l.MessageID || l2.CorrelationID != l.CorrelationID || l2.CausationID != l.CausationID {
			t.Fatalf("IDs %+v, sent again %+v", l, l2)
		}
		k2, err := publisher.KeyBytes(again.Key)
		if err != nil || string(k2) != string(key) || (k2 == nil) != (key == nil) {
			t.Fatalf("key %q, sent again %q (%v)", key, k2, err)
		}
		if len(again.Headers) != len(m.Headers) || (hName != "" && again.Headers[hName] != hValue) {
			t.Fatalf("headers %v, sent again %v", m.Headers, again.Headers)
		}
		if len(m.Headers) > 0 {
			again.Headers[hName] = "changed" // a copy: the record is not modified
			if rec.Headers[hName] != hValue {
				t.Fatal("Record.Message shares the record's headers")
			}
		}
	})
}

func TestValidateDestination(t *testing.T) {
	for _, ok := range []string{"orders", "rabbitmq/orders", "kafka:audit.v1", strings.Repeat("d", outbox.MaxDestinationLen)} {
		if err := outbox.ValidateDestination(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("d", outbox.MaxDestinationLen+1), "a\x00", "\xc3"} {
		if err := outbox.ValidateDestination(bad); !errors.Is(err, outbox.ErrInvalidDestination) {
			t.Errorf("%q: %v, want ErrInvalidDestination", bad, err)
		}
	}
}
