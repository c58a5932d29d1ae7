package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
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

var _ dedupe.BatchStore = (*Store)(nil)

// Option configures a [Store]; pass options to [New].
type Option func(*config) error

type config struct {
	prefix    string
	lease     time.Duration
	retention time.Duration
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
	return s, nil
}

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

// The script's reply is {status, token, until ms}: 1 acquired, 2 duplicate,
// 3 in flight.
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

// ARGV: token, retention ms (negative: forever). Reply 1 done, 0 lease lost.
var completeScript = redis.NewScript(completeSrc)

const completeSrc = `
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'l' or r[2] ~= ARGV[1] then
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
	c, err := claimReply(key, claimScript.Run(ctx, s.client, []string{s.RedisKey(key)}, millis(lease), millis(RecordGrace)))
	if err != nil {
		return dedupe.Claim{}, fmt.Errorf("redisstore: claim %s: %w", key, err)
	}
	return c, nil
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
	return s.finish(ctx, "complete", completeScript, c, ret)
}

// Release implements [dedupe.Store.Release] in one round trip.
func (s *Store) Release(ctx context.Context, c dedupe.Claim) error {
	if err := dedupe.CheckClaim(c); err != nil {
		return fmt.Errorf("redisstore: release %s: %w", c.Key, err)
	}
	return s.finish(ctx, "release", releaseScript, c, millis(RecordGrace))
}

func (s *Store) finish(ctx context.Context, op string, script *redis.Script, c dedupe.Claim, arg int64) error {
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", op, c.Key, err)
	}
	if c.Token > math.MaxInt64 {
		// No token this store issues is that large.
		return lostError(op, c)
	}
	n, err := script.Run(ctx, s.client, []string{s.RedisKey(c.Key)}, strconv.FormatUint(c.Token, 10), arg).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", op, c.Key, err)
	}
	if n != 1 {
		return lostError(op, c)
	}
	return nil
}

func lostError(op string, c dedupe.Claim) error {
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
		calls[i] = scriptCall{key: s.RedisKey(k), args: []any{millis(lease), millis(RecordGrace)}}
	}
	var failed error
	for i, cmd := range s.pipeline(ctx, claimScript, claimSrc, calls) {
		c, err := claimReply(keys[i], cmd)
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
			errs[i] = lostError(op, c)
			continue
		}
		calls = append(calls, scriptCall{key: s.RedisKey(c.Key), args: []any{strconv.FormatUint(c.Token, 10), arg}})
		idx = append(idx, i)
	}
	if len(calls) == 0 {
		return errs, nil
	}
	for j, cmd := range s.pipeline(ctx, script, src, calls) {
		i := idx[j]
		n, err := cmd.Int64()
		switch {
		case err != nil:
			return nil, fmt.Errorf("redisstore: %s batch: %s: %w", op, claims[i].Key, err)
		case n != 1:
			errs[i] = lostError(op, claims[i])
		}
	}
	return errs, nil
}
