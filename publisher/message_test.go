package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

func TestIDsRoot(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	ctx := context.Background()
	tests := []struct {
		name  string
		msg   publisher.Message
		parts []any
	}{
		{"key", publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte("x")}, []any{"order.created", "o-1001"}},
		{"two key parts", publisher.Message{Type: "fx.rate", Key: []any{"EUR", 12345}}, []any{"fx.rate", "EUR", 12345}},
		{"body", publisher.Message{Type: "audit.line", Body: []byte("hello")}, []any{"audit.line", "aGVsbG8="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := publisher.IDs(ctx, gen, &tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			want := gen.MustID(tt.parts...)
			if l.MessageID != want {
				t.Errorf("MessageID = %s, want %s", l.MessageID, want)
			}
			if l.CorrelationID != l.MessageID || l.CausationID != uuid.Nil || l.Type != tt.msg.Type {
				t.Errorf("lineage = %+v", l)
			}
			again, _ := publisher.IDs(ctx, gen, &tt.msg)
			if again != l {
				t.Errorf("not deterministic: %+v vs %+v", again, l)
			}
		})
	}
}

func TestIDsExplicitAndCorrelation(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	id, corr := uuid.New(), uuid.New()
	l, err := publisher.IDs(context.Background(), gen, &publisher.Message{Type: "t", ID: id, CorrelationID: corr})
	if err != nil {
		t.Fatal(err)
	}
	if l.MessageID != id || l.CorrelationID != corr {
		t.Fatalf("lineage = %+v", l)
	}
}

func TestIDsDerived(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.created"}
	ctx := lineage.NewContext(context.Background(), parent)
	msg := publisher.Message{Type: "invoice.requested", Key: []any{"o-1001"}, CorrelationID: uuid.New()}
	l1, err := publisher.IDs(ctx, gen, &msg)
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := publisher.IDs(ctx, gen, &msg)
	if l1 != l2 {
		t.Fatalf("same parent, different IDs: %+v %+v", l1, l2)
	}
	if want := gen.MustID(parent.MessageID, "invoice.requested", "o-1001"); l1.MessageID != want {
		t.Errorf("MessageID = %s, want %s", l1.MessageID, want)
	}
	if l1.CausationID != parent.MessageID || l1.CorrelationID != parent.CorrelationID {
		t.Errorf("lineage = %+v, parent %+v", l1, parent)
	}
	root, _ := publisher.IDs(context.Background(), gen, &msg)
	if root.MessageID == l1.MessageID {
		t.Error("derived ID equals the root ID")
	}
	other := lineage.NewContext(context.Background(), lineage.Lineage{MessageID: uuid.New()})
	l3, _ := publisher.IDs(other, gen, &msg)
	if l3.MessageID == l1.MessageID {
		t.Error("different parents gave the same ID")
	}
	if l3.CorrelationID != l3.CausationID {
		t.Errorf("parent without correlation: correlation %s, want the parent ID %s", l3.CorrelationID, l3.CausationID)
	}
	// No key, no body: allowed with a parent (the parent makes it unique).
	if _, err := publisher.IDs(ctx, gen, &publisher.Message{Type: "ping"}); err != nil {
		t.Errorf("empty message with parent: %v", err)
	}
}

func TestValidate(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	var v1 uuid.UUID // variant bits 00: not RFC 9562
	v1[6] = 0x10
	tests := []struct {
		name, want string
		msg        publisher.Message
	}{
		{"missing type", "missing type", publisher.Message{Key: []any{"k"}}},
		{"type not utf8", "not valid UTF-8", publisher.Message{Type: "a\xff", Key: []any{"k"}}},
		{"type is uuid", "must not be a UUID", publisher.Message{Type: uuid.NewString(), Key: []any{"k"}}},
		{"explicit id variant", "explicit ID", publisher.Message{Type: "t", ID: v1}},
		{"explicit id max", "explicit ID", publisher.Message{Type: "t", ID: uuid.Max}},
		{"correlation id", "correlation ID", publisher.Message{Type: "t", Key: []any{"k"}, CorrelationID: uuid.Max}},
		{"empty header", "empty header name", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"": "v"}}},
		{"reserved header", "reserved", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{lineage.HeaderCausationID: "v"}}},
		{"header value utf8", "not valid UTF-8", publisher.Message{Type: "t", Key: []any{"k"}, Headers: map[string]string{"h": "\xc3"}}},
		{"nothing to derive", "nothing to derive", publisher.Message{Type: "t"}},
		{"bad key part", "deriving message ID", publisher.Message{Type: "t", Key: []any{1 << 60}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := publisher.IDs(context.Background(), gen, &tt.msg)
			if !errors.Is(err, publisher.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
			wrapped := fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err))
			if !errors.Is(wrapped, publisher.ErrInvalid) {
				t.Error("ErrInvalid lost through two wraps")
			}
		})
	}
	big := publisher.Message{Type: "t", Body: make([]byte, 11)}
	if err := publisher.Validate(&big, 10); !errors.Is(err, publisher.ErrInvalid) || !strings.Contains(err.Error(), "exceeds the maximum of 10") {
		t.Errorf("oversized body: %v", err)
	}
	if err := publisher.Validate(&big, 11); err != nil {
		t.Errorf("body at the limit: %v", err)
	}
}

func TestPublishErrorUnwrap(t *testing.T) {
	err := fmt.Errorf("outer: %w", &publisher.PublishError{MessageID: uuid.New(), Attempts: 3, Err: fmt.Errorf("x: %w", publisher.ErrUnroutable)})
	var pe *publisher.PublishError
	if !errors.Is(err, publisher.ErrUnroutable) || !errors.As(err, &pe) || pe.Attempts != 3 {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "3 attempt(s)") {
		t.Errorf("error text %q does not say the attempts", err)
	}
}

func FuzzIDs(f *testing.F) {
	f.Add("order.created", "o-1", []byte("body"), true)
	f.Add("", "", []byte(nil), false)
	f.Add("a\xff", "k", []byte{0}, true)
	gen := forge.MustNew("fuzz")
	f.Fuzz(func(t *testing.T, typ, key string, body []byte, withKey bool) {
		msg := publisher.Message{Type: typ, Body: body}
		if withKey {
			msg.Key = []any{key}
		}
		l1, err1 := publisher.IDs(context.Background(), gen, &msg)
		l2, err2 := publisher.IDs(context.Background(), gen, &msg)
		if (err1 == nil) != (err2 == nil) || l1 != l2 {
			t.Fatalf("not deterministic: %v/%v %v/%v", l1, err1, l2, err2)
		}
		if err1 != nil && !errors.Is(err1, publisher.ErrInvalid) {
			t.Fatalf("error not ErrInvalid: %v", err1)
		}
	})
}

// An explicit CausationID stands for the parent lineage: the same IDs as
// publishing while handling the causing message.
func TestExplicitCausation(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New()}
	msg := publisher.Message{Type: "payment.captured", Key: []any{"SO-1"}}
	inHandler, err := publisher.IDs(lineage.NewContext(context.Background(), parent), gen, &msg)
	if err != nil {
		t.Fatal(err)
	}
	explicit := msg
	explicit.CausationID, explicit.CorrelationID = parent.MessageID, parent.CorrelationID
	got, err := publisher.IDs(context.Background(), gen, &explicit)
	if err != nil || got != inHandler {
		t.Fatalf("explicit causation gives %+v, %v; want %+v", got, err, inHandler)
	}
	// Without a correlation ID the causing message's ID is the correlation.
	explicit.CorrelationID = uuid.Nil
	got, _ = publisher.IDs(context.Background(), gen, &explicit)
	if got.MessageID != inHandler.MessageID || got.CorrelationID != parent.MessageID || got.CausationID != parent.MessageID {
		t.Fatalf("explicit causation without correlation: %+v", got)
	}
	// A lineage in the context wins over the field.
	other := lineage.Lineage{MessageID: uuid.New()}
	got, _ = publisher.IDs(lineage.NewContext(context.Background(), other), gen, &explicit)
	if got.CausationID != other.MessageID {
		t.Fatalf("context lineage lost to the field: %+v", got)
	}
	bad := msg
	bad.CausationID = uuid.UUID{1}
	if _, err := publisher.IDs(context.Background(), gen, &bad); !errors.Is(err, publisher.ErrInvalid) {
		t.Fatalf("invalid causation ID accepted: %v", err)
	}
}

// TestErrorsNameThePackageOnce: the sentinels start with "publisher: ", and
// Invalid's errors and PublishError's text carry each prefix once.
func TestErrorsNameThePackageOnce(t *testing.T) {
	for _, err := range []error{publisher.ErrInvalid, publisher.ErrUnroutable, publisher.ErrClosed} {
		if !strings.HasPrefix(err.Error(), "publisher: ") {
			t.Errorf("sentinel %q does not start with the package name", err)
		}
	}
	inv := publisher.Invalid("order.created", "body of %d bytes", 7)
	if s := inv.Error(); !errors.Is(inv, publisher.ErrInvalid) || s != `publisher: message "order.created": body of 7 bytes: invalid message` {
		t.Errorf("Invalid = %q (ErrInvalid: %t)", s, errors.Is(inv, publisher.ErrInvalid))
	}
	if err := publisher.Validate(&publisher.Message{}, 0); strings.Count(err.Error(), "publisher: ") != 1 {
		t.Errorf("Validate = %q, want the package named once", err)
	}
	own := errors.New("rabbitpub: channel closed")
	for _, tc := range []struct {
		transport string
		cause     error
		want      string
	}{
		{"rabbitpub", own, ": 2 attempt(s): channel closed"},
		{"rabbitpub", inv, `: 2 attempt(s): publisher: message "order.created": body of 7 bytes: invalid message`},
		{"", inv, `: 2 attempt(s): message "order.created": body of 7 bytes: invalid message`},
		{"kafkapub", own, ": 2 attempt(s): rabbitpub: channel closed"},
	} {
		pe := &publisher.PublishError{Transport: tc.transport, MessageID: uuid.New(), Attempts: 2, Err: tc.cause}
		name := tc.transport
		if name == "" {
			name = "publisher"
		}
		if s := pe.Error(); !strings.HasPrefix(s, name+": message ") || !strings.HasSuffix(s, tc.want) {
			t.Errorf("PublishError{%q, %q} = %q, want %q then the ID, ending %q", tc.transport, tc.cause, s, name, tc.want)
		}
	}
}
