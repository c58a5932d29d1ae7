package redisstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// TestForgetKeepsFencing: a key's tokens come from its record and the
// server clock, so deleting the record would let the next claim take a
// token from the clock alone, below a token that ran ahead of the clock (as
// after a failover to a server whose clock is behind). Forget keeps the
// token in a tombstone, so the next claim still gets a larger one and the
// forgotten holder cannot complete over it.
func TestForgetKeepsFencing(t *testing.T) {
	c := newClient(t, nil)
	s := newStore(t, c)
	ctx := testenv.Context(t, 10*time.Second)
	key := dedupe.Key{Scope: "fencing", ID: uuid.New()}
	holder, err := s.Claim(ctx, key, time.Minute)
	if err != nil || !holder.Acquired() {
		t.Fatalf("Claim = %+v, %v", holder, err)
	}
	holder.Token += uint64(time.Hour / time.Microsecond) // an hour ahead of the clock
	if err := c.HSet(ctx, s.RedisKey(key), "t", holder.Token).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Forget(ctx, key, true)
	if err != nil || r.State != dedupe.Leased || r.Token != holder.Token {
		t.Fatalf("Forget = %v, %v; want the lease of token %d", r, err, holder.Token)
	}
	if r, err := s.Inspect(ctx, key); err != nil || r.State != dedupe.Absent {
		t.Fatalf("Inspect after Forget = %v, %v; want absent", r, err)
	}
	next, err := s.Claim(ctx, key, time.Minute)
	if err != nil || !next.Acquired() {
		t.Fatalf("Claim after Forget = %+v, %v", next, err)
	}
	if next.Token <= holder.Token {
		t.Fatalf("token after Forget %d, want > %d (the forgotten holder's)", next.Token, holder.Token)
	}
	if err := s.Complete(ctx, holder, 0); !errors.Is(err, dedupe.ErrLeaseLost) {
		t.Fatalf("Complete by the forgotten holder: %v, want ErrLeaseLost", err)
	}
}

// TestForgetExpires: a forgotten record, even one kept forever, is gone
// from Redis after RecordGrace; nothing accumulates.
func TestForgetExpires(t *testing.T) {
	c := newClient(t, nil)
	s := newStore(t, c)
	ctx := testenv.Context(t, 10*time.Second)
	key := dedupe.Key{Scope: "expires", ID: uuid.New()}
	cl, err := s.Claim(ctx, key, time.Minute)
	if err != nil || !cl.Acquired() {
		t.Fatalf("Claim = %+v, %v", cl, err)
	}
	if err := s.Complete(ctx, cl, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, s.RedisKey(key)).Val(); ttl != -1 {
		t.Fatalf("PTTL of a record kept forever = %v, want none (-1)", ttl)
	}
	if _, err := s.Forget(ctx, key, false); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, s.RedisKey(key)).Val(); ttl <= 0 || ttl > redisstore.RecordGrace {
		t.Fatalf("PTTL of a forgotten record = %v, want at most %v", ttl, redisstore.RecordGrace)
	}
	// A second Forget finds nothing and leaves the tombstone's expiry alone.
	time.Sleep(100 * time.Millisecond)
	if r, err := s.Forget(ctx, key, false); err != nil || r.State != dedupe.Absent {
		t.Fatalf("second Forget = %v, %v; want absent", r, err)
	}
	if ttl := c.PTTL(ctx, s.RedisKey(key)).Val(); ttl == -1 || ttl > redisstore.RecordGrace-50*time.Millisecond {
		t.Fatalf("PTTL after a second Forget = %v, want the first one's, running down", ttl)
	}
}

// TestInspectCorrupt: a record the scripts did not write is an error, not a
// state.
func TestInspectCorrupt(t *testing.T) {
	c := newClient(t, nil)
	s := newStore(t, c)
	ctx := testenv.Context(t, 10*time.Second)
	for _, fields := range [][]any{
		{"s", "x", "t", "1", "u", "0"},
		{"s", "d", "t", "-1", "u", "0"},
		{"s", "l", "t", "1", "u", "soon"},
	} {
		key := dedupe.Key{Scope: "corrupt", ID: uuid.New()}
		if err := c.HSet(ctx, s.RedisKey(key), fields...).Err(); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Inspect(ctx, key); err == nil {
			t.Errorf("Inspect of %v = %v, want an error", fields, r)
		}
	}
}
