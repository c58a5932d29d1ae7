package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Key identifies one message for one consumer. Two consumers (scopes) that
// receive the same message each process it once.
type Key struct {
	// Scope names the consumer: its group, queue or handler name. It must be
	// non-empty valid UTF-8 of at most [MaxScopeLen] bytes without NUL bytes.
	Scope string
	// ID is the message's deterministic ID; uuid.Nil is rejected.
	ID uuid.UUID
}

// MaxScopeLen is the longest Key.Scope accepted, in bytes.
const MaxScopeLen = 200

// String returns "scope/id".
func (k Key) String() string { return k.Scope + "/" + k.ID.String() }

// Validate returns an error wrapping [ErrInvalidKey] when k cannot be stored.
func (k Key) Validate() error {
	switch {
	case k.Scope == "":
		return fmt.Errorf("%w: empty scope", ErrInvalidKey)
	case len(k.Scope) > MaxScopeLen:
		return fmt.Errorf("%w: scope is %d bytes, the maximum is %d", ErrInvalidKey, len(k.Scope), MaxScopeLen)
	case !utf8.ValidString(k.Scope):
		return fmt.Errorf("%w: scope is not valid UTF-8", ErrInvalidKey)
	case k.ID == uuid.Nil:
		return fmt.Errorf("%w: nil message ID", ErrInvalidKey)
	}
	for i := 0; i < len(k.Scope); i++ {
		if k.Scope[i] == 0 {
			return fmt.Errorf("%w: scope contains a NUL byte", ErrInvalidKey)
		}
	}
	return nil
}

// Status is the answer to a [Store.Claim].
type Status uint8

const (
	// Acquired: the caller holds the lease and processes the message, then
	// calls Complete (success) or Release (failure).
	Acquired Status = iota + 1
	// Duplicate: the message was completed earlier and is still within
	// retention. The caller acks it without processing.
	Duplicate
	// InFlight: someone else holds an unexpired lease. The caller must neither
	// ack nor drop the message; it tries again later (after Claim.Until).
	InFlight
)

// String returns "acquired", "duplicate", "in flight" or "Status(n)".
func (s Status) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case Duplicate:
		return "duplicate"
	case InFlight:
		return "in flight"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Claim is the result of [Store.Claim]. It is a plain value, safe to copy.
type Claim struct {
	// Key is the claimed key.
	Key Key
	// Status says what the caller must do.
	Status Status
	// Token is the fencing token of an Acquired claim: every acquisition of a
	// key gets a larger token than the previous one of that key, so a holder
	// whose lease expired cannot complete or release over its successor.
	// Zero unless Status is Acquired.
	Token uint64
	// Until is when the lease ends (Acquired: ours; InFlight: the holder's).
	// For Duplicate it is when retention ends, or the zero time when the key
	// is kept forever or the store does not report it.
	Until time.Time
}

// Acquired reports whether c.Status is [Acquired].
func (c Claim) Acquired() bool { return c.Status == Acquired }

// Forever, passed as the retention to [Store.Complete], keeps the key a
// duplicate until it is deleted by hand. Stores that cannot keep a key
// forever return an error wrapping [ErrUnsupported].
const Forever time.Duration = -1

// Defaults shared by the stores; each store's options can override them.
const (
	// DefaultLease is the lease a store uses when Claim is given 0.
	DefaultLease = 30 * time.Second
	// DefaultRetention is the retention a store uses when Complete is given 0.
	DefaultRetention = 24 * time.Hour
)

// Store is the claim / lease / complete protocol. Every implementation in
// this module is safe for concurrent use and passes the conformance suite in
// package dedupetest.
//
// A store error is never a duplicate: on error the caller does not ack and
// the broker redelivers.
type Store interface {
	// Claim tries to take key for lease (0: the store's default lease;
	// negative: an error). An expired lease is claimable by anyone.
	Claim(ctx context.Context, key Key, lease time.Duration) (Claim, error)
	// Complete records c's key as done for retention (0: the store's
	// default; [Forever]: keep it). It returns an error wrapping
	// [ErrLeaseLost] when c's lease expired and someone else claimed the key
	// (or its record is gone), and [ErrNotAcquired] when c is not an
	// Acquired claim.
	Complete(ctx context.Context, c Claim, retention time.Duration) error
	// Release gives c's key back after a failure, so that the redelivery
	// can claim it at once. Errors as for Complete.
	Release(ctx context.Context, c Claim) error
}

// Inbox is a [Store] that can complete a claim in the same transaction as
// the handler's own writes (the transactional inbox): both commit, or
// neither does.
type Inbox interface {
	Store
	// Process claims key for lease; if acquired, it begins a transaction,
	// calls fn with a context that carries it (the store's package says how
	// to get it), completes the claim for retention inside that transaction
	// and commits. It returns the claim, as [Store.Claim] would:
	//   - Duplicate or InFlight: fn was not called, nothing was written;
	//     Until is as for Claim (for InFlight, the holder's lease end);
	//   - Acquired with a nil error: fn's writes and the completion committed.
	// If fn fails, the lease is lost before commit (an error wrapping
	// [ErrLeaseLost]) or the commit fails, the transaction rolls back, the
	// claim is released when possible, and the error is returned with the
	// Acquired claim. fn's own error is returned as it is. A transaction that
	// could not commit because of what fn wrote or did in it (a constraint
	// checked at COMMIT, a statement that aborted the transaction, a
	// serialization failure or deadlock) returns an error wrapping
	// [ErrRolledBack]; any other error is the store's. Before the claim
	// (invalid input, a store that cannot answer) the claim is the zero
	// Claim.
	Process(ctx context.Context, key Key, lease, retention time.Duration, fn func(ctx context.Context) error) (Claim, error)
}

// DefaultLeaser is implemented by a [Store] that can say which lease a
// Claim given 0 takes, so that a consumer can check its handler timeout
// against it. Every store of this module implements it.
type DefaultLeaser interface {
	// DefaultLease returns the lease Claim uses when given 0.
	DefaultLease() time.Duration
}

// BatchStore is a [Store] that claims, completes and releases many keys in
// one round trip. It is optional: a caller (a consumer loop taking messages
// in batches) uses it when a store implements it and falls back to the
// single-key methods otherwise, so a third-party store can stay a plain
// Store.
//
// Each batch method behaves, key by key and in order, exactly as successive
// calls of the single-key method would; package dedupetest checks that. In
// particular a key given twice to ClaimBatch is claimed twice: when the first
// acquires, the second answers InFlight with the first's lease end as Until,
// otherwise both answer alike; and a claim given twice to CompleteBatch or
// ReleaseBatch succeeds once, the second getting [ErrLeaseLost]. An empty
// batch returns an empty result and does no I/O.
type BatchStore interface {
	Store
	// ClaimBatch claims every key as [Store.Claim] would and returns one
	// Claim per key, in order. Every key and the lease are checked before
	// anything is sent: an invalid key ([ErrInvalidKey]) or lease
	// ([ErrInvalidDuration]) fails the whole call and takes nothing. A
	// non-nil error means the call failed as a whole and returns no claims;
	// leases it took before failing are released where the store can, and
	// otherwise expire on their own.
	ClaimBatch(ctx context.Context, keys []Key, lease time.Duration) ([]Claim, error)
	// CompleteBatch completes every claim as [Store.Complete] would. errs[i]
	// is the result for claims[i]: nil, or the error Complete would return
	// ([ErrLeaseLost], [ErrNotAcquired], [ErrInvalidKey]). An invalid
	// retention, a closed store, a done context or a failure of the store
	// fails the call as a whole: err is non-nil, errs nil, and no completion
	// may be counted on (some may have been stored).
	CompleteBatch(ctx context.Context, claims []Claim, retention time.Duration) (errs []error, err error)
	// ReleaseBatch releases every claim as [Store.Release] would, with
	// per-claim results like CompleteBatch.
	ReleaseBatch(ctx context.Context, claims []Claim) (errs []error, err error)
}

// BatchInbox is an [Inbox] that processes a group of messages in one
// transaction, each under its own savepoint, so that one failing handler
// rolls back only its own writes while the group commits together.
type BatchInbox interface {
	Inbox
	// ProcessBatch claims keys in one round trip, begins one transaction and
	// calls fn(ctx, i) for each acquired key i in order, each inside its own
	// savepoint, with a context that carries the transaction (fn must not
	// commit or roll it back). A failing fn is rolled back to its savepoint
	// and its claim released after the commit; the others' writes and
	// completions commit together. results[i] reports key i: its claim
	// (Duplicate and InFlight: fn was not called; a key given twice is
	// InFlight the second time) and, for an acquired key, fn's error as fn
	// returned it, or an error wrapping [ErrRolledBack] when fn returned nil
	// but its statements aborted the transaction.
	//
	// A non-nil err means the group did not commit: nothing of it was
	// written, every acquired claim was released where possible, results is
	// nil, and the caller processes the messages again one by one. That
	// happens when the commit fails (a deferred constraint of any member:
	// an error wrapping [ErrRolledBack]), when a succeeding member's lease
	// was lost before the completion ([ErrLeaseLost]), on invalid input
	// (nothing claimed, fn not called) and when the store fails. If fn
	// panics, the group is rolled back, every claim released and the panic
	// continues.
	ProcessBatch(ctx context.Context, keys []Key, lease, retention time.Duration, fn func(ctx context.Context, i int) error) (results []Result, err error)
}

// Result is the outcome of one key of [BatchInbox.ProcessBatch].
type Result struct {
	// Claim is the key's claim; its Status says whether fn ran.
	Claim Claim
	// Err is the failure of an acquired key (its writes were rolled back
	// and its claim released); nil for a key that committed or was not
	// acquired.
	Err error
}

// Sentinel errors. Stores wrap them with context; test with errors.Is.
var (
	// ErrLeaseLost: the claim's lease expired and the key was claimed
	// again, or its record is gone. The caller's work must not be
	// acknowledged as done by this claim.
	ErrLeaseLost = errors.New("dedupe: lease lost")
	// ErrNotAcquired: Complete or Release was called with a claim whose
	// Status is not Acquired.
	ErrNotAcquired = errors.New("dedupe: claim not acquired")
	// ErrInvalidKey: the key fails [Key.Validate].
	ErrInvalidKey = errors.New("dedupe: invalid key")
	// ErrInvalidDuration: a negative lease, or a negative retention other
	// than [Forever].
	ErrInvalidDuration = errors.New("dedupe: invalid duration")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("dedupe: store closed")
	// ErrFull: a bounded store holds only live leases and cannot take a new
	// key without evicting one. Retry later.
	ErrFull = errors.New("dedupe: store full")
	// ErrUnsupported: the store cannot do what was asked (e.g. [Forever]).
	// It is for stores written outside this module: none of this module's
	// stores returns it (the memory store, redisstore, pgstore and boltstore
	// all keep keys forever), and the conformance suite of package
	// dedupetest expects it from a store that declares it cannot.
	ErrUnsupported = errors.New("dedupe: unsupported")
	// ErrRolledBack: an inbox transaction could not commit because of what
	// the handler wrote or did in it (a constraint checked at COMMIT, a
	// statement that aborted the transaction, a serialization failure or
	// deadlock). It is the handler's failure, not a store outage: the
	// consumer retries it like any handler error and dead-letters it after
	// its attempts.
	ErrRolledBack = errors.New("dedupe: inbox transaction rolled back")
)

// CheckClaim returns an error wrapping [ErrNotAcquired] or [ErrInvalidKey]
// when c cannot be completed or released. Stores call it first.
func CheckClaim(c Claim) error {
	if c.Status != Acquired || c.Token == 0 {
		return fmt.Errorf("%w (status %s)", ErrNotAcquired, c.Status)
	}
	return c.Key.Validate()
}

// LeaseOrDefault returns lease, or def when lease is 0, or an error wrapping
// [ErrInvalidDuration] when lease is negative.
func LeaseOrDefault(lease, def time.Duration) (time.Duration, error) {
	switch {
	case lease == 0:
		return def, nil
	case lease < 0:
		return 0, fmt.Errorf("%w: lease %v", ErrInvalidDuration, lease)
	}
	return lease, nil
}

// RetentionOrDefault returns retention, or def when retention is 0, or an
// error wrapping [ErrInvalidDuration] when retention is negative and not
// [Forever]. [Forever] is returned as is.
func RetentionOrDefault(retention, def time.Duration) (time.Duration, error) {
	switch {
	case retention == 0:
		return def, nil
	case retention == Forever:
		return Forever, nil
	case retention < 0:
		return 0, fmt.Errorf("%w: retention %v", ErrInvalidDuration, retention)
	}
	return retention, nil
}

// errorf formats an error of this package: "dedupe: " followed by format.
// Errors among args keep wrapping (%w) but lose their own "dedupe: " prefix
// in the text, so the package name appears once.
func errorf(format string, args ...any) error {
	for i, a := range args {
		if e, ok := a.(error); ok {
			args[i] = unprefixed{e}
		}
	}
	return fmt.Errorf("dedupe: "+format, args...)
}

type unprefixed struct{ err error }

func (u unprefixed) Error() string { return strings.TrimPrefix(u.err.Error(), "dedupe: ") }
func (u unprefixed) Unwrap() error { return u.err }
