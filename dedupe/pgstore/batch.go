package pgstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/internal/pgname"
)

// querier is what the batch statements run on: the pool, or the inbox
// transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ClaimBatch implements [dedupe.BatchStore.ClaimBatch] with one statement
// (one round trip): the single claim's INSERT … ON CONFLICT over the
// batch's keys as arrays. A key given more than once is sent once; its
// later occurrences answer what a second Claim would: in flight under the
// first's lease if that acquired, the same answer otherwise. Keys are sent
// sorted, so concurrent batches lock rows in the same order. As for Claim,
// the keys whose row a concurrent claim inserted or took after the
// statement began are claimed again, by a second statement for those keys
// only. A statement that fails (on a deadlock with other writers, it is run
// again first) fails the call; keys an earlier round acquired are then
// released.
func (s *Store) ClaimBatch(ctx context.Context, keys []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("pgstore: claim batch: key %d: %w", i, err)
		}
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.cfg.lease)
	if err != nil {
		return nil, fmt.Errorf("pgstore: claim batch: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("pgstore: claim batch: %w", err)
	}
	claims := make([]dedupe.Claim, len(keys))
	if len(keys) == 0 {
		return claims, nil
	}
	// The distinct keys, sorted; first[k] is k's first index in keys.
	first := make(map[dedupe.Key]int, len(keys))
	var distinct []dedupe.Key
	for i, k := range keys {
		if _, ok := first[k]; !ok {
			first[k] = i
			distinct = append(distinct, k)
		}
	}
	slices.SortFunc(distinct, compareKeys)

	answered := make(map[dedupe.Key]dedupe.Claim, len(distinct))
	todo := distinct
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt == claimAttempts {
			err = fmt.Errorf("pgstore: claim batch: %d key rows kept changing under %d attempts", len(todo), claimAttempts)
			break
		}
		var again []dedupe.Key
		again, err = s.claimRound(ctx, todo, lease, answered)
		if err != nil {
			err = fmt.Errorf("pgstore: claim batch: %w", err)
			break
		}
		todo = again
	}
	if err != nil {
		s.releaseTaken(ctx, answered)
		return nil, err
	}
	for i, k := range keys {
		c := answered[k]
		if first[k] != i && c.Acquired() {
			c = dedupe.Claim{Key: k, Status: dedupe.InFlight, Until: c.Until}
		}
		claims[i] = c
	}
	return claims, nil
}

// compareKeys orders keys by scope, then ID: the order batches lock rows in.
func compareKeys(a, b dedupe.Key) int {
	return cmp.Or(strings.Compare(a.Scope, b.Scope), bytes.Compare(a.ID[:], b.ID[:]))
}

// claimRound runs the batch claim statement once for keys (distinct),
// records the keys it answered in answered and returns the keys to claim
// again (see Store.Claim).
func (s *Store) claimRound(ctx context.Context, keys []dedupe.Key, lease time.Duration, answered map[dedupe.Key]dedupe.Claim) ([]dedupe.Key, error) {
	scopes, ids := make([]string, len(keys)), make([][16]byte, len(keys))
	for i, k := range keys {
		scopes[i], ids[i] = k.Scope, k.ID
	}
	var again []dedupe.Key
	err := retryDeadlock(ctx, func() error {
		again = again[:0]
		round := make([]dedupe.Claim, 0, len(keys))
		rows, err := s.pool.Query(ctx, s.claimBatchSQL, scopes, ids, pgname.Micros(lease))
		if err != nil {
			return err
		}
		var (
			ord     int64
			status  int32
			token   int64
			expires *time.Time
		)
		n := 0
		_, err = pgx.ForEachRow(rows, []any{&ord, &status, &token, &expires}, func() error {
			n++
			if ord < 1 || ord > int64(len(keys)) {
				return fmt.Errorf("unexpected row %d", ord)
			}
			c := dedupe.Claim{Key: keys[ord-1]}
			if expires != nil {
				c.Until = *expires
			}
			switch status {
			case 1:
				c.Status, c.Token = dedupe.Acquired, uint64(token)
			case 2:
				c.Status = dedupe.Duplicate
			case 3:
				c.Status = dedupe.InFlight
			default:
				again = append(again, c.Key)
				return nil
			}
			round = append(round, c)
			return nil
		})
		if err == nil && n != len(keys) {
			err = fmt.Errorf("%d rows for %d keys", n, len(keys))
		}
		if err != nil {
			return err
		}
		// The statement committed: its answers hold.
		for _, c := range round {
			answered[c.Key] = c
		}
		return nil
	})
	return again, err
}

// retryDeadlock runs an autocommit statement again when PostgreSQL aborted it
// as a deadlock victim or a serialization failure (class 40): it was rolled
// back entirely, so running it again is safe.
func retryDeadlock(ctx context.Context, run func() error) error {
	var err error
	for range claimAttempts {
		if err = run(); !isClass40(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func isClass40(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "40")
}

// releaseTaken releases, best effort, the acquired claims among answered.
func (s *Store) releaseTaken(ctx context.Context, answered map[dedupe.Key]dedupe.Claim) {
	var taken []dedupe.Claim
	for _, c := range answered {
		if c.Acquired() {
			taken = append(taken, c)
		}
	}
	if len(taken) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_, _ = s.ReleaseBatch(rctx, taken)
}

// CompleteBatch implements [dedupe.BatchStore.CompleteBatch] with one UPDATE
// over the batch's claims as arrays, comparing each token as Complete does.
// A claim given twice completes once; the second gets
// [dedupe.ErrLeaseLost].
func (s *Store) CompleteBatch(ctx context.Context, claims []dedupe.Claim, retention time.Duration) ([]error, error) {
	ret, err := retentionMicros(retention, s.cfg.retention)
	if err != nil {
		return nil, fmt.Errorf("pgstore: complete batch: %w", err)
	}
	return s.finishBatch(ctx, s.pool, "complete", s.completeBatchSQL, claims, ret)
}

// ReleaseBatch implements [dedupe.BatchStore.ReleaseBatch] with one UPDATE,
// like [Store.CompleteBatch].
func (s *Store) ReleaseBatch(ctx context.Context, claims []dedupe.Claim) ([]error, error) {
	return s.finishBatch(ctx, s.pool, "release", s.releaseBatchSQL, claims, 0)
}

// finishBatch runs the completion (with ret) or release statement for
// claims on q. Invalid and non-acquired claims get their error without
// being sent; a claim given twice is sent once.
func (s *Store) finishBatch(ctx context.Context, q querier, op, sql string, claims []dedupe.Claim, ret int64) ([]error, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("pgstore: %s batch: %w", op, err)
	}
	errs := make([]error, len(claims))
	type sent struct {
		key   dedupe.Key
		token uint64
	}
	seen := make(map[sent]bool, len(claims))
	var (
		scopes []string
		ids    [][16]byte
		tokens []int64
		idx    []int // idx[j]: the claim sent as element j
	)
	for i, c := range claims {
		if err := s.finishArgs(op, c); err != nil {
			errs[i] = err
			continue
		}
		if k := (sent{c.Key, c.Token}); seen[k] {
			errs[i] = lostError(op, c) // the first occurrence finishes it
			continue
		} else {
			seen[k] = true
		}
		scopes, ids, tokens = append(scopes, c.Key.Scope), append(ids, c.Key.ID), append(tokens, int64(c.Token))
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs, nil
	}
	done, err := s.finishRows(ctx, q, sql, scopes, ids, tokens, ret)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s batch: %w", op, err)
	}
	for j, i := range idx {
		if !done[j] {
			errs[i] = lostError(op, claims[i])
		}
	}
	return errs, nil
}

// finishRows runs a batch completion or release and reports which array
// elements updated their row.
func (s *Store) finishRows(ctx context.Context, q querier, sql string, scopes []string, ids [][16]byte, tokens []int64, ret int64) ([]bool, error) {
	args := []any{scopes, ids, tokens}
	if sql == s.completeBatchSQL {
		args = append(args, ret)
	}
	var done []bool
	run := func() error {
		done = make([]bool, len(scopes))
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		var ord int64
		_, err = pgx.ForEachRow(rows, []any{&ord}, func() error {
			if ord < 1 || ord > int64(len(done)) {
				return fmt.Errorf("unexpected row %d", ord)
			}
			done[ord-1] = true
			return nil
		})
		return err
	}
	if _, inTx := q.(pgx.Tx); inTx {
		return done, run() // a deadlock aborted the whole transaction
	}
	return done, retryDeadlock(ctx, run)
}

func lostError(op string, c dedupe.Claim) error {
	return fmt.Errorf("pgstore: %s %s (token %d): %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
}

// savepoint is the name of the savepoint ProcessBatch sets for a message
// of a group whose handler uses the transaction.
const savepoint = "uuidforge_inbox_message"

// ProcessBatch implements [dedupe.BatchInbox]: it claims keys in one round
// trip ([Store.ClaimBatch]), begins one transaction and, for each acquired
// key i in order, calls fn(ctx, i) with a context carrying the transaction
// ([TxFromContext]). The first time fn uses the transaction, a savepoint is
// set for it: a failing fn is rolled back to its savepoint, so only its own
// writes are undone; a fn that does not use the transaction has nothing to
// undo and costs no round trip. After the last one, the completions of the
// members whose fn succeeded are one UPDATE inside the transaction, then
// COMMIT; the claims of the failed members are released after the commit,
// in one statement. Duplicate and in-flight keys are answered without
// calling fn, as Process does. fn must not commit or roll back the
// transaction: that ends it for the whole group (a commit commits the
// writes so far, without their completions), which then fails.
//
// A member's fn error is its Result.Err, as fn returned it; a member whose
// fn returned nil but whose statements aborted the transaction (an error
// fn ignored) is rolled back to its savepoint too, with an error wrapping
// [dedupe.ErrRolledBack]. Either way the other members are unaffected.
//
// The group fails as a whole — nothing of it is written, every acquired
// claim is released where possible, the results are nil and the caller
// processes the messages again one by one — when COMMIT fails (a deferred
// constraint or trigger of any member: an error wrapping
// [dedupe.ErrRolledBack], classified as for [Store.Process]), when the
// lease of a succeeding member was lost before the completion (an error
// wrapping [dedupe.ErrLeaseLost]), when the database fails, and when fn
// panics (the panic then continues). When the database fails as a member
// first uses the transaction, that use returns the error and the group
// fails once fn returns, whatever fn returns; the later members' fn is not
// called.
//
// Cost for n acquired messages, k of whose handlers use the transaction:
// the claim, BEGIN, one round trip for each of the k savepoints (the
// previous one's RELEASE goes with it), the completion (inside the last
// savepoint, if its fn succeeded; else one more round trip rolls back to
// it first), COMMIT, and one more to release failed members if any: k + 4
// round trips besides fn's, where Process needs 4n. Keep groups to at most
// 64 messages that write: PostgreSQL tracks more subtransactions than that
// per transaction only in a slower overflow path.
func (s *Store) ProcessBatch(ctx context.Context, keys []dedupe.Key, lease, retention time.Duration, fn func(ctx context.Context, i int) error) ([]dedupe.Result, error) {
	if fn == nil {
		return nil, errors.New("pgstore: process batch: nil handler")
	}
	ret, err := retentionMicros(retention, s.cfg.retention)
	if err != nil {
		return nil, fmt.Errorf("pgstore: process batch: %w", err)
	}
	claims, err := s.ClaimBatch(ctx, keys, lease)
	if err != nil {
		return nil, err
	}
	results := make([]dedupe.Result, len(keys))
	var members []int // acquired keys, in order
	for i, c := range claims {
		results[i].Claim = c
		if c.Acquired() {
			members = append(members, i)
		}
	}
	if len(members) == 0 {
		return results, nil
	}
	g := &group{s: s, ctx: ctx, claims: claims, results: results, members: members}
	if err := g.run(ret, fn); err != nil {
		g.release(members)
		return nil, err
	}
	g.releaseFailed()
	return results, nil
}

// group is one ProcessBatch transaction.
//
// A member's savepoint is set only when its fn first uses the transaction
// (memberTx calls use): a member that does not use it costs no round trip.
// What ends the savepoint of the latest member that used it (open) waits
// until the next one does, and goes in the same round trip as that
// member's SAVEPOINT; after the last member, the completion runs inside
// the savepoint of a succeeding one.
type group struct {
	s       *Store
	ctx     context.Context
	tx      pgx.Tx
	claims  []dedupe.Claim
	results []dedupe.Result
	members []int
	failed  []int // members whose fn failed, rolled back to their savepoint

	cur     int   // the member whose fn runs; -1 outside fn
	curUsed bool  // whether cur used the transaction (and set its savepoint)
	last    int   // the latest member that used the transaction
	lastOK  bool  // whether last's fn succeeded (so far as is known)
	open    bool  // whether last's savepoint has yet to be ended
	err     error // why a member's savepoint could not be set: the group fails
	ended   bool  // fn committed or rolled back the transaction
}

func (g *group) run(ret int64, fn func(ctx context.Context, i int) error) (err error) {
	ctx := g.ctx
	tx, err := g.s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: process batch: begin: %w", err)
	}
	g.tx, g.cur = tx, -1
	defer func() {
		if err != nil {
			g.rollback()
		}
	}()
	for _, i := range g.members {
		g.cur, g.curUsed = i, false
		ferr := g.call(i, fn)
		g.cur = -1
		switch {
		case g.err != nil: // its savepoint could not be set
			return g.err
		case g.ended: // what the next savepoint statement would have found
			return fmt.Errorf("pgstore: process batch: savepoint: %w", pgx.ErrTxClosed)
		}
		if ferr != nil {
			g.results[i].Err = ferr
			g.failed = append(g.failed, i)
		}
		if g.curUsed {
			g.last, g.lastOK, g.open = i, ferr == nil, true
		}
	}
	if g.open && !g.lastOK {
		if err := g.flush(false); err != nil {
			return err
		}
	}

	for {
		var done []dedupe.Claim
		for _, i := range g.members {
			if g.results[i].Err == nil {
				done = append(done, g.claims[i])
			}
		}
		if len(done) == 0 {
			g.rollback() // every member failed: nothing to commit
			return nil
		}
		errs, err := g.s.finishBatch(ctx, tx, "complete", g.s.completeBatchSQL, done, ret)
		if pe := aborted(ctx, err); pe != nil && g.open {
			// The transaction was aborted inside the open savepoint: by
			// the statement of its member whose error fn ignored.
			g.rolledBack(pe)
			if err := g.flush(false); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if statementRolledBack(ctx, err) {
				return fmt.Errorf("pgstore: process batch: %w: %w", dedupe.ErrRolledBack, unprefixed{err})
			}
			return fmt.Errorf("pgstore: process batch: %w", unprefixed{err})
		}
		lost := 0
		for _, e := range errs {
			if e != nil {
				lost++
			}
		}
		if lost > 0 {
			// Those members' writes must not commit, and a savepoint
			// released cannot be rolled back to: the group fails.
			first := slices.IndexFunc(errs, func(e error) bool { return e != nil })
			return fmt.Errorf("pgstore: process batch: %d of %d leases lost before the commit, the first: %w", lost, len(done), unprefixed{errs[first]})
		}
		break
	}
	if err := tx.Commit(ctx); err != nil {
		if commitRolledBack(ctx, err) {
			return fmt.Errorf("pgstore: process batch: commit: %w: %w", dedupe.ErrRolledBack, err)
		}
		return fmt.Errorf("pgstore: process batch: commit: %w", err)
	}
	return nil
}

// call runs fn for member i, with the member's view of the transaction in
// its context. If fn panics, the transaction is rolled back and every
// member's claim released before the panic continues.
func (g *group) call(i int, fn func(ctx context.Context, i int) error) error {
	panicked := true
	defer func() {
		if panicked {
			g.rollback()
			g.release(g.members)
		}
	}()
	err := fn(context.WithValue(g.ctx, txKey{}, &memberTx{g: g, i: i}), i)
	panicked = false
	return err
}

func (g *group) rollback() {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), releaseTimeout)
	defer cancel()
	_ = g.tx.Rollback(rctx)
}

// use is called before member i's every use of the transaction: the first
// time, it ends the open savepoint and sets i's, in one round trip. If that
// fails, the group fails: use returns the error, to this and every later
// use, and run returns it after fn. A member's transaction used while
// another member's fn runs (kept beyond its own fn) sets nothing.
func (g *group) use(i int) error {
	if g.err != nil {
		return g.err
	}
	if i != g.cur || g.curUsed {
		return nil
	}
	g.curUsed = true
	g.err = g.flush(true)
	return g.err
}

// flush ends the open savepoint — releasing it, or rolling back to it if
// its member's fn failed — and, with next, sets the savepoint of the
// current member, in one round trip. A member whose fn returned nil but
// left the transaction aborted makes the RELEASE fail with 25P02: it is
// rolled back like a failed one, with an error wrapping ErrRolledBack.
func (g *group) flush(next bool) error {
	var sql strings.Builder
	if g.open {
		if !g.lastOK {
			sql.WriteString("ROLLBACK TO SAVEPOINT " + savepoint + ";")
		}
		sql.WriteString("RELEASE SAVEPOINT " + savepoint + ";")
	}
	if next {
		sql.WriteString("SAVEPOINT " + savepoint + ";")
	}
	if sql.Len() == 0 {
		return nil
	}
	_, err := g.tx.Exec(g.ctx, sql.String())
	if pe := aborted(g.ctx, err); pe != nil && g.open && g.lastOK {
		g.rolledBack(pe)
		return g.flush(next)
	}
	g.open = false
	if err != nil {
		return fmt.Errorf("pgstore: process batch: savepoint: %w", err)
	}
	return nil
}

// rolledBack fails the member of the open savepoint, whose fn returned nil
// but whose statements aborted the transaction (err, 25P02).
func (g *group) rolledBack(err error) {
	i := g.last
	g.results[i].Err = fmt.Errorf("pgstore: process batch: key %d %s: %w: %w", i, g.claims[i].Key, dedupe.ErrRolledBack, err)
	g.failed = append(g.failed, i)
	g.lastOK = false
}

// aborted returns err's PostgreSQL error if it is 25P02 (the transaction
// was aborted before the statement) and not an outage, else nil.
func aborted(ctx context.Context, err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if err == nil || outage(ctx, err) || !errors.As(err, &pe) || pe.Code != pgerrcode25P02 {
		return nil
	}
	return pe
}

// release releases the claims of the given members, best effort.
func (g *group) release(members []int) {
	var cs []dedupe.Claim
	for _, i := range members {
		cs = append(cs, g.claims[i])
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), releaseTimeout)
	defer cancel()
	_, _ = g.s.ReleaseBatch(rctx, cs)
}

// releaseFailed releases the failed members' claims after the commit,
// adding a release failure (other than a lost lease) to their error.
func (g *group) releaseFailed() {
	if len(g.failed) == 0 {
		return
	}
	cs := make([]dedupe.Claim, len(g.failed))
	for j, i := range g.failed {
		cs[j] = g.claims[i]
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), releaseTimeout)
	defer cancel()
	errs, err := g.s.ReleaseBatch(rctx, cs)
	for j, i := range g.failed {
		rerr := err
		if rerr == nil {
			rerr = errs[j]
		}
		if rerr != nil && !errors.Is(rerr, dedupe.ErrLeaseLost) {
			g.results[i].Err = withRelease(g.results[i].Err, rerr)
		}
	}
}
