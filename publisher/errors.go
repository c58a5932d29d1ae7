package publisher

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// PublishError reports a message that could not be published before the
// context ended or a permanent failure occurred: how many attempts were made
// and why the last one failed. Err wraps the last cause (and the context's
// error when the context ended), so [errors.Is] sees through it.
//
// Its text is "<Transport>: message <MessageID>: <Attempts> attempt(s):
// <Err>", naming the transport once: a cause whose own text starts with the
// transport's prefix (rabbitpub.ChannelClosedError's "rabbitpub: ...") is
// shown without it. A PublishError is not changed once returned, so it may
// be read concurrently.
type PublishError struct {
	// Transport is the package that failed to publish ("rabbitpub",
	// "kafkapub", ...); it starts the error message. Empty reads as
	// "publisher".
	Transport string
	// MessageID is the ID the message was stamped with (see [IDs]). A
	// publish that failed because its context ended may still have reached
	// the broker under this ID.
	MessageID uuid.UUID
	// Attempts is the number of attempts made to publish the message (at
	// least 1), the failed one included.
	Attempts int
	// Err is the cause: the last attempt's failure, joined with the
	// context's error when the context ended first.
	Err error
}

// Error implements error.
func (e *PublishError) Error() string {
	t := e.Transport
	if t == "" {
		t = "publisher"
	}
	return fmt.Sprintf("%s: message %s: %d attempt(s): %s", t, e.MessageID, e.Attempts,
		strings.TrimPrefix(fmt.Sprint(e.Err), t+": "))
}

// Unwrap returns the cause.
func (e *PublishError) Unwrap() error { return e.Err }
