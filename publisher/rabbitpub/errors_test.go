package rabbitpub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// TestErrorsNameThePackageOnce: the errors of bad input and of a closed
// publisher start with "rabbitpub: " (a batch's then name the message), as
// does ChannelClosedError's, and each package's prefix appears once, also
// in the PublishError that carries a ChannelClosedError.
func TestErrorsNameThePackageOnce(t *testing.T) {
	p, err := rabbitpub.New("amqp://127.0.0.1:1/", gen) // no I/O before the checks
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok, bad := publisher.Message{Type: "ok", Key: []any{"k"}}, publisher.Message{Key: []any{"k"}}
	check := func(what string, err, sentinel error, prefix string) {
		t.Helper()
		s := fmt.Sprint(err)
		if !errors.Is(err, sentinel) || !strings.HasPrefix(s, prefix) ||
			strings.Count(s, "rabbitpub: ") != 1 || strings.Count(s, "publisher: ") > 1 {
			t.Errorf("%s = %q, want %v starting with %q, each prefix once", what, s, sentinel, prefix)
		}
	}
	check("Publish", p.Publish(ctx, bad), publisher.ErrInvalid, `rabbitpub: publisher: message "": missing type`)
	check("PublishBatch", p.PublishBatch(ctx, ok, bad), publisher.ErrInvalid, `rabbitpub: batch message 1: publisher: message "": missing type`)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	check("Publish after Close", p.Publish(ctx, ok), publisher.ErrClosed, "rabbitpub: publisher: closed")

	closed := &rabbitpub.ChannelClosedError{Cause: amqp.ErrClosed}
	check("ChannelClosedError", closed, amqp.ErrClosed, "rabbitpub: channel closed before confirm: ")
	pe := &publisher.PublishError{Transport: "rabbitpub", MessageID: uuid.New(), Attempts: 2, Err: closed}
	check("PublishError", pe, amqp.ErrClosed, "rabbitpub: message ")
	if s := pe.Error(); !strings.HasSuffix(s, ": 2 attempt(s): channel closed before confirm: "+amqp.ErrClosed.Error()) {
		t.Errorf("PublishError = %q, want the cause after the attempts", s)
	}
}
