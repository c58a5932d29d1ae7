package outbox

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/publisher"
)

// TestPublishErrors: only an error made of PublishErrors says which
// messages failed; anything else counts against every message.
func TestPublishErrors(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	pa := &publisher.PublishError{Transport: "x", MessageID: a, Attempts: 1, Err: publisher.ErrUnroutable}
	pb := &publisher.PublishError{Transport: "x", MessageID: b, Attempts: 2, Err: errors.New("timeout")}
	cases := []struct {
		name string
		err  error
		ok   bool
		ids  []uuid.UUID
	}{
		{"one", pa, true, []uuid.UUID{a}},
		{"joined", errors.Join(pa, pb), true, []uuid.UUID{a, b}},
		{"wrapped", fmt.Errorf("relay: %w", errors.Join(pa, fmt.Errorf("x: %w", pb))), true, []uuid.UUID{a, b}},
		{"joined with another error", errors.Join(pa, errors.New("connection reset")), false, nil},
		{"plain", errors.New("closed"), false, nil},
		{"invalid batch", fmt.Errorf("message 3: %w", publisher.ErrInvalid), false, nil},
		{"empty join", errors.Join(), false, nil},
	}
	for _, tc := range cases {
		byID, ok := publishErrors(tc.err)
		if ok != tc.ok || len(byID) != len(tc.ids) {
			t.Errorf("%s: %v, %v; want %v for %v", tc.name, byID, ok, tc.ok, tc.ids)
			continue
		}
		for _, id := range tc.ids {
			if byID[id] == nil {
				t.Errorf("%s: no error for %s", tc.name, id)
			}
		}
	}
	if byID, _ := publishErrors(pa); !errors.Is(byID[a], publisher.ErrUnroutable) {
		t.Error("the per-message error lost its cause")
	}
}

func TestBackoff(t *testing.T) {
	c := config{minBackoff: 100 * time.Millisecond, maxBackoff: 2 * time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 5: 1600 * time.Millisecond,
		6: 2 * time.Second, 40: 2 * time.Second, 1 << 20: 2 * time.Second} {
		for range 50 {
			if d := c.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
