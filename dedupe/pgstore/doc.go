// Package pgstore is a [dedupe.Store] kept in one PostgreSQL table, and a
// transactional inbox ([dedupe.Inbox]): a handler's own writes and the
// completion of its message's claim commit in one transaction, so the
// message's effects happen exactly once.
//
// # Usage
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
//	...
//	store, err := pgstore.New(pool, pgstore.WithJanitor(time.Minute, func(err error) { log.Print(err) }))
//	...
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { // or create the table from DDL with your migration tool
//		return err
//	}
//
//	c, err := store.Process(ctx, dedupe.Key{Scope: "billing", ID: msgID}, 30*time.Second, 0,
//		func(ctx context.Context) error {
//			tx, _ := pgstore.TxFromContext(ctx)
//			_, err := tx.Exec(ctx, "INSERT INTO invoices (message_id, amount) VALUES ($1, $2)", msgID, amount)
//			return err
//		})
//	switch {
//	case err != nil:
//		return err // nothing committed; do not ack: the broker redelivers
//	case c.Status == dedupe.InFlight:
//		return retryAfter(c.Until) // the holder's lease end; neither ack nor drop
//	}
//	return ack() // Acquired (the invoice and the completion committed) or Duplicate
//
// A caller that manages its own transaction claims with [Store.Claim] and
// completes with [Store.CompleteTx] before its commit.
//
// # The table
//
// [DDL] documents the table (one row per key: state, fencing token, expiry)
// and [Store.Migrate] creates it, idempotently and safely from several
// processes at once. Fencing tokens come from a sequence, so they grow even
// across deletions of a key's row.
//
// Every lease, retention and expiry is computed from the database clock
// (clock_timestamp()), never from the caller's, so consumers on many
// machines agree on when a lease ends whatever their own clocks say.
//
// # Cost
//
// Claim is one statement: an INSERT … ON CONFLICT DO UPDATE … WHERE the row
// is claimable, in a CTE whose second half reads the row's state when it is
// not, so acquired, duplicate and in flight all come back in one round trip.
// Only when a concurrent claim inserted or took the key's row after the
// statement began (its snapshot shows no row, or a claimable one that is no
// longer so) is the statement run again; it never answers duplicate from a
// stale snapshot.
// Complete and Release are one UPDATE each that compares the token: no row
// updated is [dedupe.ErrLeaseLost]. [Store.Process] adds BEGIN and COMMIT.
//
// # Batches
//
// The store is a [dedupe.BatchStore] and a [dedupe.BatchInbox].
// [Store.ClaimBatch], [Store.CompleteBatch] and [Store.ReleaseBatch] are the
// single-key statements over arrays (unnest): one statement, one round trip
// per batch, with the same race handling as Claim. [Store.ProcessBatch] runs
// a group of messages in one transaction, with a savepoint for each message
// whose handler uses the transaction, set at its first use: a failing
// handler is rolled back to its savepoint only, and a handler that does not
// use the transaction costs no round trip; the completions are one UPDATE,
// then one COMMIT for the group. A COMMIT that fails (a deferred
// constraint of one member) fails the whole group: nothing is written, every
// claim is released, and the caller processes the messages one by one.
//
// # Failures of the handler and of the database
//
// [Store.Process] and [Store.ProcessBatch] tell a transaction the handler's
// own writes made fail from a failing database by SQLSTATE: data and
// integrity errors (classes 22, 23), an aborted transaction (25P02),
// serialization failures and deadlocks (class 40) and anything else COMMIT
// raises are the handler's ([dedupe.ErrRolledBack]: retried, then
// dead-lettered); a lost connection (class 08 or a network error), an
// administrator shutdown (class 57), exhausted resources (53), system and
// internal errors (58, XX) and an ended context are the store's (the message
// waits).
//
// # Inspecting and forgetting keys
//
// The store is a [dedupe.Admin]: [Store.Inspect] reads a key's row;
// [Store.Forget] locks it, checks it (a live lease is refused without
// force) and deletes it in one transaction. Tokens come from the sequence,
// so they keep growing after a row is deleted.
//
// # Retention and cleanup
//
// Retention defaults to [dedupe.DefaultRetention] (24 hours; see
// [WithDefaultRetention]); [dedupe.Forever] stores a NULL expiry and keeps
// the key until it is deleted by hand, which replaying a whole topic needs.
// Expired rows stay (and answer as expired) until [Store.Cleanup] or the
// janitor ([WithJanitor]) deletes them, in small batches that skip rows other
// transactions hold (FOR UPDATE SKIP LOCKED), so cleanup neither waits for
// claims nor makes them wait for more than one small batch.
package pgstore
