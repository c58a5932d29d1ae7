// Package boltstore is a [dedupe.Store] in an embedded bbolt file
// (go.etcd.io/bbolt): for a consumer on a single machine that must remember
// what it processed across restarts, with the same claim / lease / complete
// semantics as every other store.
//
// One process opens the file at a time (bbolt takes an exclusive lock):
// [Open] waits [DefaultOpenTimeout] for the lock and then fails with an error
// wrapping [ErrLocked] instead of hanging. Within that process, any number
// of goroutines share one [Store]. To run several consumers on one machine,
// give each its own file, or use dedupe/redisstore or dedupe/pgstore.
//
// Completions may be kept [dedupe.Forever] (what replaying a whole topic
// needs); other entries are deleted by a background cleanup in small
// transactions, so claims wait at most for one of them.
//
// Writes are durable (fsync on commit) unless [WithNoSync]; concurrent writes
// share one commit (group commit). The store is a [dedupe.BatchStore]: a
// batch of claims, completions or releases is one write transaction (a
// batch of duplicates and in-flight keys only one read), so a failed batch
// has changed nothing.
//
// # File layout
//
// Each store lives in one top-level bucket, named by [WithBucket] (default
// [DefaultBucket]), so stores with different names never share a bucket. The
// bucket holds:
//   - the key "layout" = "uuidforge-dedupe/2";
//   - the bucket "records": key = the 16 bytes of the message ID followed by
//     the scope's bytes; value = 17 bytes: the state (1 leased, 2 done), the
//     fencing token (uint64, big-endian) and the lease or retention end
//     (Unix nanoseconds, int64 big-endian; 0 for a key kept forever). Its
//     bbolt sequence issues the tokens;
//   - the bucket "expiry", the cleanup index: key = the end (8 bytes,
//     big-endian) followed by the record key; empty value.
//
// The store is a [dedupe.Admin]: [Store.Inspect] reads a record and
// [Store.Forget] deletes it with its expiry entry in one write transaction.
// Tokens come from the records bucket's sequence, so they keep growing after
// a record is deleted. A released key has no record (it is absent to
// Inspect).
//
// A bucket of that name that exists but is neither empty nor in this layout
// is refused with [ErrLayout] and left untouched; that includes files written
// by versions of this package before the nested layout, which kept records
// directly in the named bucket and the index in "<name>.expiry".
//
// The store is not a [dedupe.Inbox]: bbolt has a single writer, so holding
// a write transaction open while a handler runs would stop every other claim
// for that long. A handler whose effects must commit with the completion
// belongs on dedupe/pgstore.
//
// # Usage
//
//	store, err := boltstore.Open("/var/lib/billing/dedupe.db", boltstore.WithDefaultRetention(dedupe.Forever))
//	if err != nil {
//		return err // errors.Is(err, boltstore.ErrLocked): another process has it
//	}
//	defer store.Close()
//	c, err := store.Claim(ctx, dedupe.Key{Scope: "billing", ID: msg.ID}, 30*time.Second)
//	// ... then Complete or Release, as described in package dedupe.
package boltstore
