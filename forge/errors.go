package forge

import (
	"fmt"
	"strings"
)

// prefix starts every error message of the package, once.
const prefix = "forge: "

// errorf is fmt.Errorf for this package: the message starts with "forge: "
// exactly once, however many forge errors it wraps, so that a chain of
// wrapping layers reads "forge: part 1 (string): ...: string is not valid
// UTF-8" and errors.Is still finds every wrapped error.
func errorf(format string, args ...any) error {
	for i, a := range args {
		if e, ok := a.(error); ok {
			args[i] = unprefixed{e}
		}
	}
	return prefixed{fmt.Errorf(format, args...)}
}

// prefixed adds the package prefix to a message that lacks it.
type prefixed struct{ err error }

func (e prefixed) Error() string { return prefix + strings.TrimPrefix(e.err.Error(), prefix) }
func (e prefixed) Unwrap() error { return e.err }

// unprefixed shows a wrapped error without its package prefix.
type unprefixed struct{ err error }

func (e unprefixed) Error() string { return strings.TrimPrefix(e.err.Error(), prefix) }
func (e unprefixed) Unwrap() error { return e.err }
