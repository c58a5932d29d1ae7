package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

var summaryLine = regexp.MustCompile(`^summary: published=(\d+) unique=(\d+) processed=(\d+) duplicates_skipped=(\d+) lost=(\d+)$`)

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
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			m := summaryLine.FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("last line %q does not match %s\n%s", last, summaryLine, out.String())
			}
			n := make([]int, len(m))
			for i := 1; i < len(m); i++ {
				n[i], _ = strconv.Atoi(m[i])
			}
			published, unique, processed, skipped, lost := n[1], n[2], n[3], n[4], n[5]
			// A client-side retry may add a copy to the topic, so published
			// can exceed what the program sent; everything else is exact:
			// each order charged once, every other delivery of the first
			// pass and of the replay skipped.
			if published < tc.orders+tc.retried || unique != tc.orders || processed != tc.orders ||
				skipped != 2*published-tc.orders || lost != 0 {
				t.Errorf("got %s; want published>=%d unique=%d processed=%d duplicates_skipped=2*published-%d lost=0\n%s",
					last, tc.orders+tc.retried, tc.orders, tc.orders, tc.orders, out.String())
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
