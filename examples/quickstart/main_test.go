package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

// TestRun runs the demo on the in-process broker and checks its summary line
// against what the configuration implies: every order charged once, every
// retry and every replayed record skipped.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name            string
		orders, retried int
	}{
		{"default", 10, 3},
		{"no retries", 4, 0},
		{"all retried", 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testenv.Context(t, 60*time.Second)
			var out bytes.Buffer
			if err := run(ctx, config{Orders: tc.orders, Retried: tc.retried}, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			published := tc.orders + tc.retried
			// Each record is delivered twice (first pass, replay); all but
			// one delivery per order are skipped.
			want := fmt.Sprintf("summary: published=%d unique=%d processed=%d duplicates_skipped=%d lost=0",
				published, tc.orders, tc.orders, 2*published-tc.orders)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if got := lines[len(lines)-1]; got != want {
				t.Errorf("last line:\n got %s\nwant %s\nfull output:\n%s", got, want, out.String())
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []config{{Orders: 0}, {Orders: 2, Retried: 3}, {Orders: 2, Retried: -1}} {
		if err := run(t.Context(), cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%+v) = nil, want an error", cfg)
		}
	}
}
