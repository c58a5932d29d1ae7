package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Admin is a [Store] an operator can look into and correct, one key at a
// time: [Admin.Inspect] shows a key's record and [Admin.Forget] deletes it,
// so that the next delivery of its message is processed again. It is
// optional, like [BatchStore]; every store in this module implements it, and
// the command forge dedupe uses it. Package dedupetest checks it.
type Admin interface {
	Store
	// Inspect returns key's record as the store holds it now. A key without
	// a record is the zero Record (State [Absent]) with a nil error. An
	// invalid key is an error wrapping [ErrInvalidKey].
	Inspect(ctx context.Context, key Key) (Record, error)
	// Forget deletes key's record, so that the next claim acquires it, and
	// returns the record as it was (State [Absent]: there was none and
	// nothing changed). A lease that has not ended is refused unless force
	// is set: Forget returns the lease's record and an error wrapping
	// [ErrLeaseHeld] and changes nothing. Forcing it makes the holder's
	// Complete and Release fail with [ErrLeaseLost], and lets another
	// consumer claim and process the message while the holder may still be
	// processing it: the message may run twice.
	//
	// Fencing holds across Forget: a later acquisition of key gets a larger
	// token than any issued for it before, so a holder whose record was
	// forgotten can never complete or release over its successor.
	Forget(ctx context.Context, key Key, force bool) (Record, error)
}

// State is the state of a key's record, as [Admin.Inspect] reports it.
type State uint8

const (
	// Absent: the key has no record; the next claim acquires it. It is the
	// zero State.
	Absent State = iota
	// Leased: a claim acquired the key and has neither completed nor
	// released it. Record.Until is the lease end.
	Leased
	// Done: the key was completed. Record.Until is the retention end, the
	// zero time for a key kept [Forever].
	Done
	// Released: the last holder released the key after a failure; the next
	// claim acquires it. Stores that delete a released key's record (the
	// memory store, boltstore) report [Absent] instead.
	Released
)

// String returns "absent", "leased", "done", "released" or "State(n)".
func (s State) String() string {
	switch s {
	case Absent:
		return "absent"
	case Leased:
		return "leased"
	case Done:
		return "done"
	case Released:
		return "released"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Record is a key's record as [Admin.Inspect] and [Admin.Forget] report it.
// It is a plain value, safe to copy; the zero Record is an absent key.
type Record struct {
	// State is the record's state.
	State State
	// Token is the fencing token of the key's last acquisition: the
	// holder's for Leased, the completer's for Done, the releaser's for
	// Released (where the store keeps it); 0 for Absent.
	Token uint64
	// Until is the lease end of a Leased record and the retention end of a
	// Done one, by the store's clock; the zero time for a Done key kept
	// forever, and for Released and Absent.
	Until time.Time
	// Expired reports, for Leased and Done, that Until has passed by the
	// store's clock: the next claim acquires the key, and the record stays
	// only until the store cleans it up. A holder whose lease expired may
	// still complete as long as nobody claimed the key since.
	Expired bool
}

// String describes r for logs and errors: "absent", "leased until
// 2026-05-01T12:00:00Z (token 7)", "done until … (token 7)", "done forever
// (token 7)" or "released (token 7)", with ", expired" when Expired.
func (r Record) String() string {
	var b strings.Builder
	b.WriteString(r.State.String())
	if r.State == Absent {
		return b.String()
	}
	switch {
	case r.Forever():
		b.WriteString(" forever")
	case !r.Until.IsZero():
		b.WriteString(" until ")
		b.WriteString(r.Until.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(&b, " (token %d", r.Token)
	if r.Expired {
		b.WriteString(", expired")
	}
	b.WriteString(")")
	return b.String()
}

// Forever reports whether r is a completion kept until it is deleted by
// hand ([Forever] retention).
func (r Record) Forever() bool { return r.State == Done && r.Until.IsZero() }

// Live reports whether r is a lease that has not ended: the one [Admin.Forget]
// refuses without force.
func (r Record) Live() bool { return r.State == Leased && !r.Expired }

// ErrLeaseHeld is wrapped by the error of [Admin.Forget] when it refuses to
// delete a lease that has not ended without force.
var ErrLeaseHeld = errors.New("dedupe: lease held")
