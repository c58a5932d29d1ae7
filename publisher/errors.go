package publisher

import (
	"fmt"

	"github.com/google/uuid"
)

// PublishError reports a message that could not be published before the
// context ended or a permanent failure occurred: how many attempts were made
// and why the last one failed. Err wraps the last cause (and the context's
// error when the context ended), so [errors.Is] sees through it.
type PublishError struct {
	// Transport is the package that failed to publish ("rabbitpub",
	// "kafkapub", ...); it starts the error message.
	Transport string
	MessageID uuid.UUID
	Attempts  int
	Err       error
}

// Error implements error.
func (e *PublishError) Error() string {
	t := e.Transport
	if t == "" {
		t = "publisher"
	}
	return fmt.Sprintf("%s: message %s: %d attempt(s): %v", t, e.MessageID, e.Attempts, e.Err)
}

// Unwrap returns the cause.
func (e *PublishError) Unwrap() error { return e.Err }
