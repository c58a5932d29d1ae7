package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
)

var _ dedupe.Admin = (*Store)(nil)

// Both scripts reply {state, token, until ms, expired (0 or 1)} as the
// record was; the forget script adds 1 when it forgot the record, 0 when
// it refused a live lease or found nothing. A record in state f (forgotten)
// is absent.
//
// Forget does not delete the record: it turns it into a tombstone, state f
// with the token kept, expiring after RecordGrace like a released record,
// so that the next claim's token still grows from the last one issued (see
// the token rule above claimScript). The claim script takes a tombstone as
// it takes any record that is neither done nor leased; Complete and
// Release find no lease in it and fail with ErrLeaseLost.

var inspectScript = redis.NewScript(inspectSrc)

const inspectSrc = `
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 's', 't', 'u')
local st, tok, u = r[1], r[2], r[3]
if not st or st == 'f' then
  return {'', '', '', 0}
end
local un = tonumber(u) or 0
local expired = 0
if (st == 'l' or st == 'd') and un ~= 0 and un <= now_ms then expired = 1 end
return {st, tok or '', u or '', expired}
`

// ARGV: force (1 or 0), grace ms.
var forgetScript = redis.NewScript(forgetSrc)

const forgetSrc = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 's', 't', 'u')
local st, tok, u = r[1], r[2], r[3]
if not st or st == 'f' then
  return {'', '', '', 0, 0}
end
local un = tonumber(u) or 0
local expired = 0
if (st == 'l' or st == 'd') and un ~= 0 and un <= now_ms then expired = 1 end
if st == 'l' and expired == 0 and ARGV[1] ~= '1' then
  return {st, tok or '', u or '', 0, 0}
end
redis.call('HSET', KEYS[1], 's', 'f', 'u', '0')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {st, tok or '', u or '', expired, 1}
`

// Inspect implements [dedupe.Admin.Inspect] in one round trip. Expiry is
// judged by the Redis server's clock. A released record is reported
// [dedupe.Released] for [RecordGrace], then [dedupe.Absent].
func (s *Store) Inspect(ctx context.Context, key dedupe.Key) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: inspect: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: inspect %s: %w", key, err)
	}
	res, err := inspectScript.Run(ctx, s.client, []string{s.RedisKey(key)}).Slice()
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: inspect %s: %w", key, err)
	}
	r, err := recordReply(res, 4)
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: inspect %s: %w", key, err)
	}
	return r, nil
}

// Forget implements [dedupe.Admin.Forget] in one round trip: the record
// becomes a tombstone that keeps the token for [RecordGrace] (so fencing
// holds) and is absent to Inspect.
func (s *Store) Forget(ctx context.Context, key dedupe.Key, force bool) (dedupe.Record, error) {
	if err := key.Validate(); err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: forget: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: forget %s: %w", key, err)
	}
	f := "0"
	if force {
		f = "1"
	}
	res, err := forgetScript.Run(ctx, s.client, []string{s.RedisKey(key)}, f, millis(RecordGrace)).Slice()
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: forget %s: %w", key, err)
	}
	r, err := recordReply(res, 5)
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("redisstore: forget %s: %w", key, err)
	}
	if r.State != dedupe.Absent && res[4] != int64(1) {
		return r, fmt.Errorf("redisstore: forget %s: %v: %w", key, r, dedupe.ErrLeaseHeld)
	}
	return r, nil
}

// recordReply reads the first four fields of a script's reply of n fields.
func recordReply(res []any, n int) (dedupe.Record, error) {
	if len(res) != n {
		return dedupe.Record{}, fmt.Errorf("unexpected reply %v", res)
	}
	st, _ := res[0].(string)
	tok, _ := res[1].(string)
	u, _ := res[2].(string)
	expired, _ := res[3].(int64)
	var r dedupe.Record
	switch st {
	case "":
		return r, nil
	case "l":
		r.State = dedupe.Leased
	case "d":
		r.State = dedupe.Done
	case "r":
		r.State = dedupe.Released
	default:
		return r, fmt.Errorf("corrupt record: state %q", st)
	}
	var err error
	if r.Token, err = strconv.ParseUint(tok, 10, 64); err != nil {
		return dedupe.Record{}, fmt.Errorf("corrupt record: token %q", tok)
	}
	ms, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return dedupe.Record{}, fmt.Errorf("corrupt record: until %q", u)
	}
	if r.State != dedupe.Released && ms != 0 {
		r.Until = time.UnixMilli(ms)
	}
	r.Expired = expired == 1
	return r, nil
}
