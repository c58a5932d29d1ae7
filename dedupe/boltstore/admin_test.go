package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
)

// TestForgetRestart: a forgotten key stays forgotten after the file is
// opened again, its expiry entry is gone with it, and tokens issued after
// the restart are larger than the forgotten one.
func TestForgetRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dedupe.db")
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	kept, dropped := dedupetest.NewKey("restart"), dedupetest.NewKey("restart")
	var last dedupe.Claim
	for _, k := range []dedupe.Key{kept, dropped} {
		last = claim(t, s, k, time.Minute, dedupe.Acquired)
		if err := s.Complete(ctx, last, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := s.Forget(ctx, dropped, false); err != nil || r.State != dedupe.Done || r.Token != last.Token {
		t.Fatalf("Forget = %v, %v; want the done record of token %d", r, err, last.Token)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Inspect(ctx, kept); !errors.Is(err, dedupe.ErrClosed) {
		t.Fatalf("Inspect after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Forget(ctx, kept, true); !errors.Is(err, dedupe.ErrClosed) {
		t.Fatalf("Forget after Close: %v, want ErrClosed", err)
	}

	s = open(t, path)
	if r, err := s.Inspect(ctx, kept); err != nil || r.State != dedupe.Done {
		t.Fatalf("Inspect(kept) after restart = %v, %v; want done", r, err)
	}
	if r, err := s.Inspect(ctx, dropped); err != nil || r.State != dedupe.Absent {
		t.Fatalf("Inspect(forgotten) after restart = %v, %v; want absent", r, err)
	}
	if n, err := s.Len(); err != nil || n != 1 {
		t.Fatalf("Len = %d, %v; want 1", n, err)
	}
	again := claim(t, s, dropped, time.Minute, dedupe.Acquired)
	if again.Token <= last.Token {
		t.Fatalf("token after Forget and restart %d, want > %d", again.Token, last.Token)
	}
}
