package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

// TestMain lets the test binary play the worker: run starts os.Executable()
// (this binary, under go test) with "worker" as its first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(workerMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		orders, crashEvery int
	}{
		{6, 3}, // workers killed after the invoices of orders 3 and 6
		{4, 0}, // no crash: no duplicate on the topic
	} {
		t.Run(fmt.Sprintf("orders=%d/crash-every=%d", tc.orders, tc.crashEvery), func(t *testing.T) {
			cfg := config{
				AMQPURL: testenv.AMQPURL(t), RedisURL: testenv.RedisURL(t),
				Orders: tc.orders, CrashEvery: tc.crashEvery, Lease: 500 * time.Millisecond,
				Timeout: 45 * time.Second,
			}
			ctx := testenv.Context(t, 60*time.Second)
			var out bytes.Buffer
			if err := run(ctx, cfg, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			crashes := 0
			if tc.crashEvery > 0 {
				crashes = tc.orders / tc.crashEvery
			}
			// Every kill left one invoice on the topic twice; downstream
			// processed each invoice once.
			want := fmt.Sprintf("pipeline: inputs=%d crashes=%d derived_records=%d derived_unique=%d processed_downstream=%d ids_differing=0 lost=0",
				tc.orders, crashes, tc.orders+crashes, tc.orders, tc.orders)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if got := lines[len(lines)-1]; got != want {
				t.Errorf("last line:\n got %s\nwant %s\n%s", got, want, out.String())
			}
			if n := strings.Count(out.String(), "now killed before the ack"); n != crashes {
				t.Errorf("%d workers report being killed, want %d\n%s", n, crashes, out.String())
			}
			if n := strings.Count(out.String(), "2 records on the topic"); n != crashes {
				t.Errorf("%d invoices reported twice on the topic, want %d\n%s", n, crashes, out.String())
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []config{{Orders: 0, Lease: time.Second}, {Orders: 2, CrashEvery: -1, Lease: time.Second}, {Orders: 2}} {
		if err := run(t.Context(), cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%+v) = nil, want an error", cfg)
		}
	}
}
