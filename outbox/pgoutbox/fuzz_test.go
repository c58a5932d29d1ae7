package pgoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// FuzzEnqueue: a message the publisher accepts comes back from the table
// exactly (type, key in wire form, routing key, headers, body); one it
// refuses is refused with ErrInvalid and stores nothing.
func FuzzEnqueue(f *testing.F) {
	f.Add("order.placed", "SO-1", []byte("{}"), "tenant", "acme", "")
	f.Add("é", "ключ", []byte{0, 0xff}, "x-trace", "00-ab\"\\<>&", "rk.é")
	f.Add("a\x00b", "k", []byte(nil), "", "", "")
	f.Add("t", "k", []byte(nil), "h", "v\x00", "")
	f.Add("t", "k", []byte(nil), "h\xff", "v", "")
	f.Add("t", "", []byte("only a body"), "", "", "r\x00")
	f.Add("t", "k", []byte(nil), "h", "\u2028\U0001F600", strings.Repeat("r", 256))
	pool := newPool(f)
	s := newStore(f, pool)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, typ, key string, body []byte, hName, hValue, rk string) {
		m := publisher.Message{Type: typ, Body: body, RoutingKey: rk}
		if key != "" {
			m.Key = []any{key}
		}
		if hName != "" {
			m.Headers = map[string]string{hName: hValue}
		}
		// A destination per input: the same type and key with another body
		// is the same message ID, which a destination stores once.
		dest := fmt.Sprint("fuzz-", n.Add(1))
		p := newPublisher(t, s, dest)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		before := count(t, pool, s, "")
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return p.Publish(pgoutbox.NewContext(ctx, tx), m) })
		if err != nil {
			if !errors.Is(err, publisher.ErrInvalid) {
				t.Fatalf("Publish: %v, want nil or ErrInvalid", err)
			}
			if after := count(t, pool, s, ""); after != before {
				t.Fatalf("a refused message left %d rows", after-before)
			}
			return
		}
		l, _ := publisher.IDs(ctx, gen, &m)
		r, err := s.Lookup(ctx, dest, l.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Type != typ || string(r.Key) != key || (r.Key == nil) != (key == "") || r.RoutingKey != rk || string(r.Body) != string(body) {
			t.Fatalf("stored %+v for %+v", r, m)
		}
		if len(r.Headers) != len(m.Headers) || (hName != "" && r.Headers[hName] != hValue) {
			t.Fatalf("headers %q stored as %q", m.Headers, r.Headers)
		}
	})
}
