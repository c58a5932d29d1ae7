package outbox

import (
	"context"
	"time"
)

// Store is the storage a [Relay] works on: package
// [github.com/uuidforge/uuidforge/outbox/pgoutbox] implements it on a
// PostgreSQL table. Implementations are safe for concurrent use, also by
// relays in other processes sharing the storage.
type Store interface {
	// Claim takes up to about limit due pending records of destination
	// and holds them for the caller until [Batch.Finish]; nobody else can
	// claim them meanwhile, and if the caller dies they are released.
	//
	// A record with a key is returned only when every pending record of
	// destination with the same key and a smaller Seq is returned in the
	// same batch (so the records of one key in a batch form the front of
	// that key's queue, in Seq order) — or, for the first of them, when it
	// has no pending predecessor at all. Records are returned in Seq order.
	// An empty batch must still be finished.
	Claim(ctx context.Context, destination string, limit int) (Batch, error)
	// Listen calls wake with a destination each time records may have been
	// added there, and with "" (meaning: any destination) once it is
	// listening, since records added before that were not announced. It
	// blocks until ctx is done (returning nil) or listening fails. A store
	// that cannot announce records calls wake("") once and blocks until ctx
	// is done; the relay then relies on polling.
	Listen(ctx context.Context, wake func(destination string)) error
}

// Batch is a set of records claimed by [Store.Claim]. It is used by one
// goroutine.
type Batch interface {
	// Records returns the claimed records, in Seq order.
	Records() []Record
	// Finish stores o and releases every record of the batch; records not
	// named in o are released unchanged. Nothing of o is stored when it
	// fails, and the records are released all the same (they are published
	// again later, with the same IDs).
	Finish(ctx context.Context, o Outcome) error
}

// Outcome is what happened to the records of a [Batch].
type Outcome struct {
	// Dispatched lists the Seq of each record the broker confirmed.
	Dispatched []int64
	// Retry lists the records that failed and are to be tried again after
	// their Delay (the later records of their key wait for them: see
	// [Store.Claim]).
	Retry []Failure
	// Dead lists the records that cannot be published, with their reason.
	Dead []Failure
}

// Failure is one record that failed.
type Failure struct {
	// Seq identifies the record.
	Seq int64
	// Reason is the error, as text.
	Reason string
	// Delay is the wait before the next attempt (Retry only).
	Delay time.Duration
}
