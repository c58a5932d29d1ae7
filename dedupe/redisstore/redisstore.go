package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
)

// DefaultPrefix is the key prefix used unless [WithPrefix] says otherwise.
const DefaultPrefix = "uuidforge:dedupe:"

// RecordGrace is how long a key's record outlives the end of its lease (and
// a released key's record outlives its release). Within it, a holder whose
// lease ended may still Complete or Release as long as nobody has claimed the
// key since; after it, the record is gone and the holder gets
// [dedupe.ErrLeaseLost].
const RecordGrace = time.Second

var (
	_ dedupe.BatchStore    = (*Store)(nil)
	_ dedupe.DefaultLeaser = (*Store)(nil)
)

// Option configures a [Store]; pass options to [New].
type Option func(*config) error

type config struct {
	prefix     string
	lease      time.Duration
	retention  time.Duration
	acks       int           // WithReplicaAcks: replicas to wait for; 0: none
	ackTimeout time.Duration // WithReplicaAcks: how long to wait
}

// WithPrefix sets the prefix of every Redis key the store writes. Default
// [DefaultPrefix]. It must not contain '{' or '}', which would change the
// hash tag that keeps each record on one Cluster slot. Give each application
// (or each test) its own prefix when they share a Redis database and must
// not see each other's keys; the scope already separates consumers.
func WithPrefix(p string) Option {
	return func(c *config) error {
		if strings.ContainsAny(p, "{}") {
			return fmt.Errorf("redisstore: WithPrefix(%q): contains a brace", p)
		}
		c.prefix = p
		return nil
	}
}

// WithDefaultLease sets the lease used when Claim is given 0. Default
// [dedupe.DefaultLease]. It must be at least a millisecond, the resolution
// of Redis expiry.
func WithDefaultLease(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Millisecond {
			return fmt.Errorf("redisstore: WithDefaultLease(%v): below a millisecond: %w", d, dedupe.ErrInvalidDuration)
		}
		c.lease = d
		return nil
	}
}

// WithDefaultRetention sets the retention used when Complete is given 0.
// Default [dedupe.DefaultRetention] (24 hours). [dedupe.Forever] is allowed:
// completed keys then never expire (mind Redis memory).
func WithDefaultRetention(d time.Duration) Option {
	return func(c *config) error {
		if d != dedupe.Forever && d < time.Millisecond {
			return fmt.Errorf("redisstore: WithDefaultRetention(%v): below a millisecond: %w", d, dedupe.ErrInvalidDuration)
		}
		c.retention = d
		return nil
	}
}

// WithReplicaAcks makes the store wait, with Redis's WAIT command on the
// connection that wrote, until n replicas of the primary acknowledged a
// write before it reports it:
//
//   - Complete and CompleteBatch return nil only once n replicas hold the
//     completion (the WAIT goes in the same pipeline as the completion: no
//     extra round trip);
//   - a Claim (or a key of ClaimBatch) answers [dedupe.Duplicate] only once
//     n replicas hold the completion it found (the record is rewritten
//     unchanged and waited for: one more round trip, for duplicates only).
//
// So a consumer acknowledges a message only when its completion survives a
// failover that promotes one of those replicas: every later copy of it is
// still a duplicate after the promotion.
//
// When fewer than n replicas acknowledge within timeout, the call returns
// an error wrapping [ErrNotReplicated] (a store error: the consumer does not
// acknowledge the message). The completion is then on the primary but not
// known to be anywhere else: the redelivery finds it (a duplicate, once it
// is replicated) or, after a failover that lost it, processes the message
// again. Retrying Complete with the same claim fails with
// [dedupe.ErrLeaseLost] (the key is completed already; the message waits
// for its redelivery). Nothing is lost either way; the cost of the option is
// that while fewer than n replicas are reachable, nothing is completed and
// consumers stop acknowledging, so choose n below the number of replicas
// if the loss of one must not stop them.
//
// Claims that acquire or answer in flight, releases and [Store.Forget] do not
// wait: a claim lost in a failover can let a second consumer take a message
// whose first holder is still at work (the first one's completion then
// fails with [dedupe.ErrLeaseLost]); a lost release or forget makes the key
// wait for its lease or stay a duplicate, as before the call.
//
// The client must be a *redis.Client (a standalone server, or a Sentinel
// failover client from redis.NewFailoverClient) or a *redis.ClusterClient,
// whose pipelines then go straight to the primary of each key's slot (a
// call that finds its slot moved fails, and the cluster client reloads its
// slot map for the next); another client is an error from [New]. n must be
// at least 1, and timeout at least a millisecond and below the client's
// ReadTimeout, which bounds the pipeline's reply. Default: no waiting.
func WithReplicaAcks(n int, timeout time.Duration) Option {
	return func(c *config) error {
		switch {
		case n < 1:
			return fmt.Errorf("redisstore: WithReplicaAcks(%d, %v): fewer than 1 replica", n, timeout)
		case timeout < time.Millisecond:
			return fmt.Errorf("redisstore: WithReplicaAcks(%d, %v): timeout below a millisecond: %w", n, timeout, dedupe.ErrInvalidDuration)
		}
		c.acks, c.ackTimeout = n, timeout
		return nil
	}
}

// ErrNotReplicated is wrapped by the error of a call that [WithReplicaAcks]
// made wait, when fewer replicas than asked acknowledged its write in time.
// It is a store error: the message is not acknowledged and is delivered
// again.
var ErrNotReplicated = errors.New("redisstore: not acknowledged by enough replicas")

// notReplicated is the error of a WAIT that fell short; it wraps
// ErrNotReplicated without repeating the package's name in the text.
type notReplicated struct {
	acked, want int
	timeout     time.Duration
}

func (e notReplicated) Error() string {
	return fmt.Sprintf("%d of %d replica(s) acknowledged within %v (%s)", e.acked, e.want, e.timeout,
		strings.TrimPrefix(ErrNotReplicated.Error(), "redisstore: "))
}

func (e notReplicated) Unwrap() error { return ErrNotReplicated }

// Store is a [dedupe.Store] kept in Redis. Each key (scope, ID) is one Redis
// hash named prefix + "{scope/ID}"; every call is one Lua script run on that
// one key, so it works on Redis Cluster (the braces are the hash tag) and
// through Sentinel, and costs one round trip (EVALSHA, falling back to EVAL
// once after a script cache flush).
//
// A Store is safe for concurrent use by multiple goroutines.
type Store struct {
	client redis.UniversalClient
	cfg    config
	closed atomic.Bool
}

// New returns a store that keeps its records in client. The client stays the
// caller's: [Store.Close] does not close it. New does no I/O; it fails only
// on a nil client or an invalid option (nil options are ignored).
//
// Deadlines and cancellation are checked before each call; for a deadline to
// interrupt a call already waiting on the server, create the client with
// ContextTimeoutEnabled (otherwise its read and write timeouts apply).
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	s := &Store{
		client: client,
		cfg: config{
			prefix:    DefaultPrefix,
			lease:     dedupe.DefaultLease,
			retention: dedupe.DefaultRetention,
		},
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s.cfg); err != nil {
			return nil, err
		}
	}
	if s.cfg.acks > 0 {
		var rt time.Duration
		switch c := client.(type) {
		case *redis.Client:
			rt = c.Options().ReadTimeout
		case *redis.ClusterClient:
			rt = c.Options().ReadTimeout
		default:
			return nil, fmt.Errorf("redisstore: WithReplicaAcks(%d, %v): needs a *redis.Client or *redis.ClusterClient, not %T", s.cfg.acks, s.cfg.ackTimeout, client)
		}
		if rt > 0 && s.cfg.ackTimeout >= rt {
			return nil, fmt.Errorf("redisstore: WithReplicaAcks(%d, %v): timeout not below the client's ReadTimeout (%v)", s.cfg.acks, s.cfg.ackTimeout, rt)
		}
	}
	return s, nil
}

// DefaultLease returns the lease Claim uses when given 0 ([WithDefaultLease]).
func (s *Store) DefaultLease() time.Duration { return s.cfg.lease }

// Close marks the store closed: later calls return an error wrapping
// [dedupe.ErrClosed]. It does not close the Redis client. It is idempotent.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// RedisKey returns the Redis key that holds key's record.
func (s *Store) RedisKey(key dedupe.Key) string {
	var b strings.Builder
	b.Grow(len(s.cfg.prefix) + len(key.Scope) + 39)
	b.WriteString(s.cfg.prefix)
	b.WriteByte('{')
	b.WriteString(key.Scope)
	b.WriteByte('/')
	b.WriteString(key.ID.String())
	b.WriteByte('}')
	return b.String()
}

// The scripts read the server clock (TIME) before writing, which Redis 3.2
// to 4 allow only after redis.replicate_commands(); from Redis 5 on, effects
// replication is the default and the call is a no-op.
//
// Record fields: s = state (l leased, d done, r released, f forgotten by
// Forget: a tombstone, absent to Inspect), t = fencing token,
// u = lease end (leased) or retention end (done) in Unix milliseconds of the
// Redis server's clock, 0 for forever.
//
// Tokens: a new acquisition takes max(previous token + 1, server time in
// microseconds). The record of a leased or released key is kept for
// RecordGrace after its lease, a forgotten key's for RecordGrace after
// Forget, and a completed key's until its retention ends, so tokens keep
// growing even after a record expired: the clock has moved far past any
// token issued before.

// ARGV: lease ms, grace ms, and "1" to rewrite the record of a duplicate
// unchanged (WithReplicaAcks: a write the WAIT that follows can count
// replicas for). The script's reply is {status, token, until ms}: 1
// acquired, 2 duplicate, 3 in flight.
var claimScript = redis.NewScript(claimSrc)

const claimSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local now_ms = sec * 1000 + math.floor(usec / 1000)
local now_us = sec * 1000000 + usec
local r = redis.call('HMGET', KEYS[1], 's', 't', 'u')
local st, tok, u = r[1], tonumber(r[2]) or 0, tonumber(r[3]) or 0
if st == 'd' and (u == 0 or u > now_ms) then
  if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 's', 'd') end
  return {2, 0, u}
end
if st == 'l' and u > now_ms then
  return {3, 0, u}
end
local nt = tok + 1
if nt < now_us then nt = now_us end
local lease = tonumber(ARGV[1])
local until_ms = now_ms + lease
redis.call('HSET', KEYS[1], 's', 'l', 't', string.format('%d', nt), 'u', string.format('%d', until_ms))
redis.call('PEXPIRE', KEYS[1], lease + tonumber(ARGV[2]))
return {1, nt, until_ms}
`

// ARGV: token, retention ms (negative: forever). Reply 1 done, 0 lease
// lost, 2 completed before with this token (a second completion of one
// claim: lease lost too).
var completeScript = redis.NewScript(completeSrc)

const completeSrc = `
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[2] ~= ARGV[1] then
  return 0
end
if r[1] == 'd' then
  return 2
end
if r[1] ~= 'l' then
  return 0
end
local ret = tonumber(ARGV[2])
if redis.replicate_commands then redis.replicate_commands() end
if ret < 0 then
  redis.call('HSET', KEYS[1], 's', 'd', 'u', '0')
  redis.call('PERSIST', KEYS[1])
  return 1
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 's', 'd', 'u', string.format('%d', now_ms + ret))
redis.call('PEXPIRE', KEYS[1], ret)
return 1
`

// ARGV: token, grace ms. Reply 1 released, 0 lease lost. The record stays
// for the grace period so the next token still grows from this one.
var releaseScript = redis.NewScript(releaseSrc)

const releaseSrc = `
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'l' or r[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'r', 'u', '0')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
`

// millis rounds d up to whole milliseconds, Redis's expiry resolution.
func millis(d time.Duration) int64 {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int64(ms)
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return dedupe.ErrClosed
	}
	return ctx.Err()
}

// Claim implements [dedupe.Store.Claim] in one round trip. Leases are
// rounded up to whole milliseconds and measured by the Redis server's clock.
func (s *Store) Claim(ctx context.Context, key dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Claim{}, fmt.Errorf("redisstore: claim %s: %w", key, err)
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.cfg.lease)
	if err != nil {
		return dedupe.Claim{}, fmt.Errorf("redisstore: claim %s: %w", key, err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Claim{}, fmt.Errorf("redisstore: claim %s: %w", key, err)
	}
	call := scriptCall{key: s.RedisKey(key), args: claimArgs(lease, false)}
	cmd := claimScript.Run(ctx, s.client, []string{call.key}, call.args...)
	var wait error
	if s.cfg.acks > 0 && isDuplicate(cmd) {
		// Answer duplicate only once the completion is replicated.
		call.args = claimArgs(lease, true)
		cmds, waits := s.replicated(ctx, claimScript, claimSrc, []scriptCall{call})
		cmd, wait = cmds[0], waits[0]
	}
	c, err := claimReply(key, cmd)
	if err == nil && c.Status == dedupe.Duplicate && wait != nil {
		err = fmt.Errorf("duplicate on the primary, but %w", wait)
	}
	if err != nil {
		return dedupe.Claim{}, fmt.Errorf("redisstore: claim %s: %w", key, err)
	}
	return c, nil
}

// claimArgs returns the claim script's arguments; touch has it rewrite the
// record of a duplicate (for a WAIT that follows, see WithReplicaAcks).
func claimArgs(lease time.Duration, touch bool) []any {
	t := "0"
	if touch {
		t = "1"
	}
	return []any{millis(lease), millis(RecordGrace), t}
}

// isDuplicate reports whether cmd is a claim script's reply "duplicate".
func isDuplicate(cmd *redis.Cmd) bool {
	res, err := cmd.Int64Slice()
	return err == nil && len(res) == 3 && res[0] == 2
}

// claimReply reads the claim script's reply.
func claimReply(key dedupe.Key, cmd *redis.Cmd) (dedupe.Claim, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return dedupe.Claim{}, err
	}
	if len(res) != 3 {
		return dedupe.Claim{}, fmt.Errorf("unexpected reply %v", res)
	}
	c := dedupe.Claim{Key: key}
	switch res[0] {
	case 1:
		c.Status, c.Token, c.Until = dedupe.Acquired, uint64(res[1]), time.UnixMilli(res[2])
	case 2:
		c.Status = dedupe.Duplicate
		if res[2] != 0 {
			c.Until = time.UnixMilli(res[2])
		}
	case 3:
		c.Status, c.Until = dedupe.InFlight, time.UnixMilli(res[2])
	default:
		return dedupe.Claim{}, fmt.Errorf("unexpected status %d", res[0])
	}
	return c, nil
}

// Complete implements [dedupe.Store.Complete] in one round trip: the token
// is compared and the record marked done atomically. Retention is rounded
// up to whole milliseconds; [dedupe.Forever] removes the record's expiry.
func (s *Store) Complete(ctx context.Context, c dedupe.Claim, retention time.Duration) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("redisstore: complete %s: %w", c.Key, err)
	}
	retention, err := dedupe.RetentionOrDefault(retention, s.cfg.retention)
	if err != nil {
		return fmt.Errorf("redisstore: complete %s: %w", c.Key, err)
	}
	ret := int64(-1)
	if retention != dedupe.Forever {
		ret = millis(retention)
	}
	return s.finish(ctx, "complete", completeScript, completeSrc, c, ret)
}

// Release implements [dedupe.Store.Release] in one round trip.
func (s *Store) Release(ctx context.Context, c dedupe.Claim) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("redisstore: release %s: %w", c.Key, err)
	}
	return s.finish(ctx, "release", releaseScript, releaseSrc, c, millis(RecordGrace))
}

// finish completes or releases c. Only completions wait for replicas
// (WithReplicaAcks).
func (s *Store) finish(ctx context.Context, op string, script *redis.Script, src string, c dedupe.Claim, arg int64) error {
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", op, c.Key, err)
	}
	if c.Token > math.MaxInt64 {
		// No token this store issues is that large.
		return lostError(op, c, 0)
	}
	call := scriptCall{key: s.RedisKey(c.Key), args: []any{strconv.FormatUint(c.Token, 10), arg}}
	var (
		cmd  *redis.Cmd
		wait error
	)
	if s.cfg.acks > 0 && script == completeScript {
		cmds, waits := s.replicated(ctx, script, src, []scriptCall{call})
		cmd, wait = cmds[0], waits[0]
	} else {
		cmd = script.Run(ctx, s.client, []string{call.key}, call.args...)
	}
	n, err := cmd.Int64()
	switch {
	case err != nil:
		return fmt.Errorf("redisstore: %s %s: %w", op, c.Key, err)
	case n != 1:
		return lostError(op, c, n)
	case wait != nil:
		return fmt.Errorf("redisstore: %s %s: stored on the primary, but %w", op, c.Key, wait)
	}
	return nil
}

// lostError is the error of a completion or release whose script answered
// reply (0, or 2: completed before with this very token).
func lostError(op string, c dedupe.Claim, reply int64) error {
	if reply == 2 {
		return fmt.Errorf("redisstore: %s %s (token %d): completed before with this token: %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
	}
	return fmt.Errorf("redisstore: %s %s (token %d): %w", op, c.Key, c.Token, dedupe.ErrLeaseLost)
}

// scriptCall is one script run of a batch: on one Redis key, so that
// every call of a batch can go to the Cluster node that owns its key.
type scriptCall struct {
	key  string
	args []any
}

// pipeline runs script once per call in one pipeline: one round trip per
// server involved (go-redis's ClusterClient splits a pipeline by node). The
// calls a server refused because its script cache lacked the script (after
// a restart or SCRIPT FLUSH) did not run; they run again, in order, with
// EVAL, which caches the script. Each returned command holds its own reply
// or error.
func (s *Store) pipeline(ctx context.Context, script *redis.Script, src string, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	// Pipelined reports the first failed command; every command carries
	// its own error, which the caller reads.
	_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = p.EvalSha(ctx, script.Hash(), []string{c.key}, c.args...)
		}
		return nil
	})
	var again []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range again {
				cmds[i] = p.Eval(ctx, src, []string{calls[i].key}, calls[i].args...)
			}
			return nil
		})
	}
	return cmds
}

// ClaimBatch implements [dedupe.BatchStore.ClaimBatch]: the claim script once
// per key, in one pipeline — one round trip on a single server; on Redis
// Cluster, one per node holding keys of the batch, since every script touches
// the one key (and slot) of its record. A key given twice is claimed twice,
// in order: the second answers in flight under the first's lease. If any
// script fails, the call fails and the leases the others took are released
// (where Redis can still be reached; otherwise they expire on their own).
func (s *Store) ClaimBatch(ctx context.Context, keys []dedupe.Key, lease time.Duration) ([]dedupe.Claim, error) {
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("redisstore: claim batch: key %d: %w", i, err)
		}
	}
	lease, err := dedupe.LeaseOrDefault(lease, s.cfg.lease)
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim batch: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("redisstore: claim batch: %w", err)
	}
	claims := make([]dedupe.Claim, len(keys))
	if len(keys) == 0 {
		return claims, nil
	}
	calls := make([]scriptCall, len(keys))
	for i, k := range keys {
		calls[i] = scriptCall{key: s.RedisKey(k), args: claimArgs(lease, false)}
	}
	cmds := s.pipeline(ctx, claimScript, claimSrc, calls)
	var waits []error
	if s.cfg.acks > 0 {
		// Claim the duplicates again, rewriting their records, and wait
		// for their replication.
		var dups []int
		var again []scriptCall
		for i, cmd := range cmds {
			if isDuplicate(cmd) {
				dups = append(dups, i)
				again = append(again, scriptCall{key: calls[i].key, args: claimArgs(lease, true)})
			}
		}
		if len(dups) > 0 {
			waits = make([]error, len(cmds))
			cmds2, waits2 := s.replicated(ctx, claimScript, claimSrc, again)
			for j, i := range dups {
				cmds[i], waits[i] = cmds2[j], waits2[j]
			}
		}
	}
	var failed error
	for i, cmd := range cmds {
		c, err := claimReply(keys[i], cmd)
		if err == nil && c.Status == dedupe.Duplicate && waits != nil && waits[i] != nil {
			err = fmt.Errorf("duplicate on the primary, but %w", waits[i])
		}
		if err != nil && failed == nil {
			failed = fmt.Errorf("redisstore: claim batch: key %d %s: %w", i, keys[i], err)
		}
		claims[i] = c
	}
	if failed != nil {
		var taken []dedupe.Claim
		for _, c := range claims {
			if c.Acquired() {
				taken = append(taken, c)
			}
		}
		if len(taken) > 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			_, _ = s.ReleaseBatch(rctx, taken)
		}
		return nil, failed
	}
	return claims, nil
}

// releaseTimeout bounds the release of the leases a failed ClaimBatch took.
const releaseTimeout = 5 * time.Second

// CompleteBatch implements [dedupe.BatchStore.CompleteBatch]: the completion
// script once per claim, in one pipeline (see [Store.ClaimBatch]). A claim
// given twice completes once; the second gets [dedupe.ErrLeaseLost]. If a
// script fails for another reason than a lost lease (the connection, a
// server error), the call fails as a whole: some completions may have been
// stored, none may be counted on.
func (s *Store) CompleteBatch(ctx context.Context, claims []dedupe.Claim, retention time.Duration) ([]error, error) {
	retention, err := dedupe.RetentionOrDefault(retention, s.cfg.retention)
	if err != nil {
		return nil, fmt.Errorf("redisstore: complete batch: %w", err)
	}
	ret := int64(-1)
	if retention != dedupe.Forever {
		ret = millis(retention)
	}
	return s.finishBatch(ctx, "complete", completeScript, completeSrc, claims, ret)
}

// ReleaseBatch implements [dedupe.BatchStore.ReleaseBatch] like
// [Store.CompleteBatch].
func (s *Store) ReleaseBatch(ctx context.Context, claims []dedupe.Claim) ([]error, error) {
	return s.finishBatch(ctx, "release", releaseScript, releaseSrc, claims, millis(RecordGrace))
}

func (s *Store) finishBatch(ctx context.Context, op string, script *redis.Script, src string, claims []dedupe.Claim, arg int64) ([]error, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("redisstore: %s batch: %w", op, err)
	}
	errs := make([]error, len(claims))
	var (
		calls []scriptCall
		idx   []int
	)
	for i, c := range claims {
		if err := dedupe.CheckClaim(c); err != nil {
			errs[i] = fmt.Errorf("redisstore: %s %s: %w", op, c.Key, err)
			continue
		}
		if c.Token > math.MaxInt64 {
			errs[i] = lostError(op, c, 0)
			continue
		}
		calls = append(calls, scriptCall{key: s.RedisKey(c.Key), args: []any{strconv.FormatUint(c.Token, 10), arg}})
		idx = append(idx, i)
	}
	if len(calls) == 0 {
		return errs, nil
	}
	var (
		cmds  []*redis.Cmd
		waits []error
	)
	if s.cfg.acks > 0 && script == completeScript {
		cmds, waits = s.replicated(ctx, script, src, calls)
	} else {
		cmds = s.pipeline(ctx, script, src, calls)
	}
	for j, cmd := range cmds {
		i := idx[j]
		n, err := cmd.Int64()
		switch {
		case err != nil:
			return nil, fmt.Errorf("redisstore: %s batch: %s: %w", op, claims[i].Key, err)
		case n != 1:
			errs[i] = lostError(op, claims[i], n)
		case waits != nil && waits[j] != nil:
			return nil, fmt.Errorf("redisstore: %s batch: %s: stored on the primary, but %w", op, claims[i].Key, waits[j])
		}
	}
	return errs, nil
}

// replicated runs script once per call, as pipeline does, for a store
// with WithReplicaAcks, and ends each pipeline with a WAIT: WAIT counts the
// replicas that have every write of the connection it runs on, and a
// pipeline runs on one connection of one server — the client's, or on Redis
// Cluster the primary of each key's slot (one pipeline per primary
// involved, at the same time). waits[i] is the failure of the WAIT that
// covers call i: its own error, or one wrapping ErrNotReplicated when fewer
// replicas than asked acknowledged in time; nil when it succeeded.
//
// A pipeline the client retries (a connection lost on the way) runs its
// scripts again on a new connection: a completion then answers "completed
// before" (lease lost) and a claim rewrites its record again, so a WAIT
// never counts replicas for a write made on another connection.
func (s *Store) replicated(ctx context.Context, script *redis.Script, src string, calls []scriptCall) (cmds []*redis.Cmd, waits []error) {
	cmds = make([]*redis.Cmd, len(calls))
	waits = make([]error, len(calls))
	groups := map[*redis.Client][]int{}
	var nodes []*redis.Client
	for i, c := range calls {
		node, err := s.primaryFor(ctx, c.key)
		if err != nil {
			cmds[i] = redis.NewCmd(ctx)
			cmds[i].SetErr(err)
			continue
		}
		if _, ok := groups[node]; !ok {
			nodes = append(nodes, node)
		}
		groups[node] = append(groups[node], i)
	}
	if len(nodes) == 1 {
		s.onNode(ctx, nodes[0], script, src, calls, groups[nodes[0]], cmds, waits)
		return cmds, waits
	}
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Go(func() { s.onNode(ctx, node, script, src, calls, groups[node], cmds, waits) })
	}
	wg.Wait()
	return cmds, waits
}

// primaryFor returns the client of the server that takes writes to key.
func (s *Store) primaryFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Client:
		return c, nil
	}
	return nil, fmt.Errorf("no primary for %T", s.client) // New allows no other client
}

// onNode runs the calls idx in a pipeline on node that ends with a WAIT;
// see replicated.
func (s *Store) onNode(ctx context.Context, node *redis.Client, script *redis.Script, src string, calls []scriptCall, idx []int, cmds []*redis.Cmd, waits []error) {
	run := func(idx []int, eval bool) *redis.Cmd {
		var wait *redis.Cmd
		// Each command carries its own error, which the caller reads.
		_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range idx {
				if eval {
					cmds[i] = p.Eval(ctx, src, []string{calls[i].key}, calls[i].args...)
				} else {
					cmds[i] = p.EvalSha(ctx, script.Hash(), []string{calls[i].key}, calls[i].args...)
				}
			}
			wait = p.Do(ctx, "WAIT", s.cfg.acks, s.cfg.ackTimeout.Milliseconds())
			return nil
		})
		return wait
	}
	wait := run(idx, false)
	var again []int
	for _, i := range idx {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		// On another connection, maybe: its WAIT covers only its writes,
		// so the first pipeline's WAIT counts for the calls that ran in it.
		w := run(again, true)
		err := waitError(w, s.cfg.acks, s.cfg.ackTimeout)
		for _, i := range again {
			waits[i] = err
		}
	}
	err := waitError(wait, s.cfg.acks, s.cfg.ackTimeout)
	failed := false
	for _, i := range idx {
		if !slices.Contains(again, i) {
			waits[i] = err
		}
		if cmds[i].Err() != nil {
			failed = true
		}
	}
	if cc, ok := s.client.(*redis.ClusterClient); ok && failed {
		// The slot may have moved (a failover, a resharding): routing
		// went around the cluster client here, so have it look again.
		cc.ReloadState(ctx)
	}
}

// waitError returns the failure of a WAIT for want replicas: its own error,
// or one wrapping ErrNotReplicated when fewer acknowledged; nil when enough
// did.
func waitError(wait *redis.Cmd, want int, timeout time.Duration) error {
	n, err := wait.Int64()
	switch {
	case err != nil:
		return fmt.Errorf("wait for replicas: %w", err)
	case n < int64(want):
		return notReplicated{acked: int(n), want: want, timeout: timeout}
	}
	return nil
}
