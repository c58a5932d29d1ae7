package retry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/publisher"
)

func fast() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) }

func never(error) bool { return false }

func TestDoSucceedsAfterFailures(t *testing.T) {
	calls, retries := 0, 0
	err := Do(context.Background(), "test", uuid.New(), fast, never, func() { retries++ }, func() error {
		if calls++; calls < 3 {
			return errors.New("nacked")
		}
		return nil
	})
	if err != nil || calls != 3 || retries != 2 {
		t.Fatalf("err %v, calls %d, retries %d; want nil, 3, 2", err, calls, retries)
	}
}

func TestDoPermanent(t *testing.T) {
	boom := errors.New("access refused")
	id := uuid.New()
	err := Do(context.Background(), "test", id, fast, func(err error) bool { return errors.Is(err, boom) }, nil, func() error { return boom })
	var pe *publisher.PublishError
	if !errors.As(err, &pe) || pe.Attempts != 1 || pe.MessageID != id || !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want a PublishError after 1 attempt wrapping the cause", err)
	}
}

// When the context ends during an attempt, the error names the last real
// failure, not only the context.
func TestDoContextEndKeepsCause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	calls := 0
	err := Do(ctx, "test", uuid.New(), fast, never, nil, func() error {
		calls++
		if calls == 1 {
			return errors.New("confirm timed out")
		}
		<-ctx.Done()
		return ctx.Err()
	})
	var pe *publisher.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "confirm timed out") {
		t.Fatalf("Do = %v, want a deadline error naming the confirm timeout", err)
	}
	if pe.Attempts != calls {
		t.Fatalf("attempts %d, calls %d", pe.Attempts, calls)
	}
}

func TestWaitStop(t *testing.T) {
	if err := Wait(context.Background(), &backoff.StopBackOff{}); !errors.Is(err, ErrBackOffStop) {
		t.Fatalf("Wait = %v, want ErrBackOffStop", err)
	}
}

// TestJoinCtxNamesTheTransportOnce: a last failure that carries the
// transport's own prefix (rabbitpub.ChannelClosedError) is not shown with
// it a second time in the PublishError, and both errors are still matched.
func TestJoinCtxNamesTheTransportOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	boom := errors.New("test: channel closed")
	calls := 0
	err := Do(ctx, "test", uuid.New(), fast, never, nil, func() error {
		calls++
		return boom
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want both the context's error and the failure", err)
	}
	if s := err.Error(); strings.Count(s, "test: ") != 1 || !strings.HasSuffix(s, "context canceled (last failure: channel closed)") {
		t.Errorf("Do = %q, want the transport named once", s)
	}
}
