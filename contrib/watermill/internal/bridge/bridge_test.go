package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/ackhook"
)

// TestHandlerErrors: every error the handler makes starts with the
// adapter's name, once, and keeps what callers branch on; a reason set by a
// middleware comes back as it is.
func TestHandlerErrors(t *testing.T) {
	const name = "wmtest"
	reason := errors.New("wmforge: handler failed")
	for _, tc := range []struct {
		test       string
		deadLetter bool
		settle     func(context.CancelFunc, *message.Message) // nil: the message is never taken
		want       string                                     // "" with wantErr: the reason itself
		wantErr    error
	}{
		{test: "nack without a reason", settle: func(_ context.CancelFunc, m *message.Message) { m.Nack() },
			want: name + ": nacked by the Watermill handler", wantErr: ErrNacked},
		{test: "nack with a permanent reason", settle: func(_ context.CancelFunc, m *message.Message) {
			ackhook.FromContext(m.Context()).SetErr(consumer.Permanent(reason))
			m.Nack()
		}, want: name + ": nacked by the Watermill handler: wmforge: handler failed", wantErr: ErrNacked},
		{test: "nack with a reason", settle: func(_ context.CancelFunc, m *message.Message) {
			ackhook.FromContext(m.Context()).SetErr(reason)
			m.Nack()
		}, wantErr: reason},
		{test: "permanent reason with dead letters", deadLetter: true, settle: func(_ context.CancelFunc, m *message.Message) {
			ackhook.FromContext(m.Context()).SetErr(consumer.Permanent(reason))
			m.Nack()
		}, wantErr: reason},
		{test: "subscription ends before the ack", settle: func(end context.CancelFunc, _ *message.Message) { end() },
			want: name + ": subscription ended before the message was acked: context canceled", wantErr: context.Canceled},
		{test: "subscription ends before the message is taken",
			want: name + ": subscription ended before the message was taken: context canceled", wantErr: context.Canceled},
	} {
		t.Run(tc.test, func(t *testing.T) {
			sctx, end := context.WithCancel(context.Background())
			defer end()
			out := make(chan *message.Message)
			h := &handler{name: name, ctx: sctx, out: out, deadLetter: tc.deadLetter}
			done := make(chan error, 1)
			go func() {
				done <- h.Handle(context.Background(), &consumer.Message{ID: uuid.New(), CorrelationID: uuid.New()})
			}()
			if tc.settle == nil {
				end()
			} else {
				select {
				case m := <-out:
					tc.settle(end, m)
				case <-time.After(10 * time.Second):
					t.Fatal("the message was not handed out")
				}
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Handle did not return")
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Handle = %v; want an error matching %v", err, tc.wantErr)
			}
			if tc.want == "" {
				if err != nil && strings.HasPrefix(err.Error(), name+": ") {
					t.Errorf("Handle = %v; want the reason as it is", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("Handle = %v; want %q", err, tc.want)
			}
			if err != nil && strings.Count(err.Error(), name+": ") != 1 {
				t.Errorf("%q names %s more than once", err, name)
			}
		})
	}
}
