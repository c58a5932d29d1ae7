package dedupetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
)

const faultEnv = "DEDUPETEST_FAULT"

// faulty wraps the memory store with one protocol violation.
type faulty struct {
	*dedupe.Memory
	fault string
}

func (f *faulty) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	switch f.fault {
	case "ignore-context":
		ctx = context.Background()
	case "error-as-duplicate":
		c, err := f.Memory.Claim(ctx, k, lease)
		if err != nil {
			return dedupe.Claim{Key: k, Status: dedupe.Duplicate}, nil
		}
		return c, nil
	case "steal-in-flight":
		c, err := f.Memory.Claim(ctx, k, lease)
		if err == nil && c.Status == dedupe.InFlight {
			c.Status, c.Token = dedupe.Acquired, 1<<40
		}
		return c, err
	}
	return f.Memory.Claim(ctx, k, lease)
}

func (f *faulty) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	err := f.Memory.Complete(ctx, c, retention)
	if f.fault == "no-fencing" && err != nil {
		return nil
	}
	return err
}

func (f *faulty) Release(ctx context.Context, c dedupe.Claim) error {
	if f.fault == "release-marks-done" { // a failed handler's message looks done
		return f.Memory.Complete(ctx, c, 0)
	}
	return f.Memory.Release(ctx, c)
}

func newMemory(t *testing.T) *dedupe.Memory {
	t.Helper()
	m, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (f *faulty) ClaimBatch(ctx context.Context, keys []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	claims, err := f.Memory.ClaimBatch(ctx, keys, lease)
	if f.fault == "batch-repeat-acquires" { // a key given twice is acquired twice
		first := map[dedupe.Key]dedupe.Claim{}
		for i, c := range claims {
			if p, ok := first[c.Key]; ok && p.Acquired() {
				claims[i] = p
			} else if !ok {
				first[c.Key] = c
			}
		}
	}
	return claims, err
}

func (f *faulty) CompleteBatch(ctx context.Context, claims []dedupe.Claim, retention time.Duration) ([]error, error) {
	errs, err := f.Memory.CompleteBatch(ctx, claims, retention)
	if f.fault == "batch-no-fencing" {
		for i, e := range errs {
			if errors.Is(e, dedupe.ErrLeaseLost) {
				errs[i] = nil
			}
		}
	}
	return errs, err
}

func (f *faulty) Forget(ctx context.Context, k dedupe.Key, force bool) (dedupe.Record, error) {
	switch f.fault {
	case "forget-ignores-lease": // a live lease is forgotten without force
		force = true
	case "forget-keeps-record": // reports the record, deletes nothing
		return f.Memory.Inspect(ctx, k)
	}
	return f.Memory.Forget(ctx, k, force)
}

// runFaulty runs the suite on a store with the given fault; it is meant to
// fail, in the child process that TestSuiteCatchesFaults starts.
func runFaulty(t *testing.T, fault string) {
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store {
			m := newMemory(t)
			return &faulty{Memory: m, fault: fault}
		},
		Broken: func(t *testing.T) dedupe.Store {
			m := newMemory(t)
			m.Close()
			return &faulty{Memory: m, fault: fault}
		},
		Forever: true,
	})
}

// TestSuiteCatchesFaults shows that the suite fails stores that break the
// protocol, each in the case that names the rule. It runs itself again as a
// child process per fault (with the fault in the environment), where it runs
// the suite on the faulty store, and checks that the child failed there.
func TestSuiteCatchesFaults(t *testing.T) {
	if fault := os.Getenv(faultEnv); fault != "" {
		runFaulty(t, fault)
		return
	}
	tests := []struct{ fault, failingCase string }{
		{"release-marks-done", "ReleaseThenAcquire"},
		{"no-fencing", "LeaseExpiry"},
		{"error-as-duplicate", "Broken"},
		{"ignore-context", "CancelledContext"},
		{"steal-in-flight", "ConcurrentClaims"},
		{"batch-repeat-acquires", "BatchClaim"},
		{"batch-no-fencing", "BatchFinish"},
		{"forget-ignores-lease", "AdminForgetLease"},
		{"forget-keeps-record", "AdminForgetDone"},
	}
	for _, tt := range tests {
		t.Run(tt.fault, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestSuiteCatchesFaults$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), faultEnv+"="+tt.fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with fault %q:\n%s", tt.fault, out)
			}
			if want := "--- FAIL: TestSuiteCatchesFaults/" + tt.failingCase + " "; !strings.Contains(string(out), want) {
				t.Fatalf("fault %q: no %q in the output:\n%s", tt.fault, want, out)
			}
		})
	}
}

// The suite passes the memory store itself (the stores' own packages run it
// with their options).
func TestMemory(t *testing.T) {
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store {
			m := newMemory(t)
			return m
		},
		Forever: true,
	})
}
