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
// share one commit (group commit).
//
// The store is not a [dedupe.Inbox]: bbolt has a single writer, so holding
// a write transaction open while a handler runs would stop every other claim
// for that long. A handler whose effects must commit with the completion
// belongs on dedupe/pgstore.
//
// # Usage
//
//	store, err := boltstore.Open("/var/lib/billing/dedupe.db", boltstore.WithRetention(dedupe.Forever))
//	if err != nil {
//		return err // errors.Is(err, boltstore.ErrLocked): another process has it
//	}
//	defer store.Close()
//	c, err := store.Claim(ctx, dedupe.Key{Scope: "billing", ID: msg.ID}, 30*time.Second)
//	// ... then Complete or Release, as described in package dedupe.
package boltstore
