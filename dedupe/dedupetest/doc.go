// Package dedupetest is the conformance suite for [dedupe.Store]
// implementations: every store in this module passes it, and a user's own
// store can run it too.
//
// It checks the protocol of package dedupe: of 64 concurrent claims of one key
// exactly one is acquired and the rest are in flight; an expired lease is
// claimable by anyone and the old holder's Complete and Release then fail with
// [dedupe.ErrLeaseLost]; a completed key is a duplicate until its retention
// ends and claimable after; a released key is claimable at once; fencing
// tokens grow; scopes are independent; invalid keys, non-acquired claims and
// cancelled contexts are errors; a broken store answers errors, never
// acquired or duplicate; and, for a [dedupe.Inbox], that the handler's writes
// and the completion commit or roll back together, and that a commit the
// handler's writes make fail is [dedupe.ErrRolledBack].
//
// A store that implements [dedupe.BatchStore] is checked key by key against
// the single-key methods: one batch holding a new, a duplicate, an in-flight,
// an expired, a released and a retention-ended key, some of them twice,
// answers what single claims in the same order answer; completions and
// releases of a mix of good, stale, repeated, not-acquired and invalid claims
// answer claim by claim; invalid input fails the whole call and takes
// nothing; concurrent batches in different orders acquire each key once. A
// [dedupe.BatchInbox] is checked against Inbox: a failing member rolls back
// only its own writes, a panicking member rolls back the group and panics on,
// and a commit failure or a lost lease fails the group with every claim
// released. A [dedupe.Admin] is checked against the protocol: Inspect
// reports every state a key can be in (with its token and lease or
// retention end); Forget of a completed, released or expired key makes the
// next claim acquire with a larger token and the old claim fail with
// [dedupe.ErrLeaseLost]; Forget of a live lease without force fails with
// [dedupe.ErrLeaseHeld] and changes nothing, and with force makes the
// holder's Complete and Release (and, for an inbox, its Process) fail with
// ErrLeaseLost. The suite finds out which interfaces the store implements
// from a store NewStore returns.
//
// Usage, in the store's own test file:
//
//	func TestConformance(t *testing.T) {
//		dedupetest.Run(t, dedupetest.Options{
//			NewStore: func(t *testing.T) dedupe.Store {
//				s := mystore.New(...)
//				t.Cleanup(func() { s.Close() })
//				return s
//			},
//			Broken: func(t *testing.T) dedupe.Store {
//				s := mystore.New(...)
//				s.Close()
//				return s
//			},
//			Forever: true,
//		})
//	}
//
// The cases run in parallel and wait for leases of a few hundred milliseconds;
// the whole suite takes a few seconds.
package dedupetest
