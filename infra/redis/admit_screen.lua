-- admit's screening of one request, in one round trip and atomically.
-- KEYS[1] the request's recent-acceptance record (its payload hash), KEYS[2] the key's
-- one-minute window counter, KEYS[3] the tenant's projected balance hash, KEYS[4] the key's
-- rolling minute (a sorted set of request ids scored by admission time in ms), KEYS[5] the
-- tenant's in-flight slots (a hash: request id -> 'deadline_ms key_id'), KEYS[6] the
-- tenant's in-flight counts (a hash: key id -> count), KEYS[7] the tokens each request of the
-- key's rolling minute holds (a hash: request id -> tokens, and '=total' their sum;
-- `trim_window.lua` lowers them).
-- KEYS[8], KEYS[9] the key's and its team's projected budget levels (`level_projection`).
-- ARGV: payload hash, record TTL s, window TTL s, rate limit per minute, tokens needed (the
-- quota pre-check's), tokens per minute (0: none), max in flight (0: none), now ms, slot TTL
-- ms, request id, key id, the tokens the request may reserve at most (the rolling minute's),
-- the key's and its team's token limits (-1: none).
-- A key with neither tokens per minute nor max in flight sends KEYS[1..3] and the first five
-- ARGV only, and, when its key or team limits tokens, the two level hashes as KEYS[4..5] and
-- their limits as ARGV[6..7]: every argument costs the client its encoding, most of a screen's
-- CPU (BENCHMARKS.md, "admit's gate"). A key with either limit sends KEYS[1..7] and
-- ARGV[1..12], and all nine KEYS and fourteen ARGV when a level limits tokens too.
-- A request with a record is a resend: nothing is counted, its recorded hash is answered.
-- Otherwise the request is counted and the balance read; when the rate limit and the quota
-- pre-check both let it through, the key's limits are checked, and when within them too the
-- record is written with its hash and the key's tokens and slot are held, so a resend of it is
-- recognised before the limits. The caller decides the rate and quota refusals from the same
-- count and balance; the key limits are decided here (they write), answered as the limit's
-- name and the ms until enough of it frees (-1: never); a level that refused is answered as
-- its scope and the tokens it has left (two more values).
local known = redis.call('GET', KEYS[1])
if known then
  return {known, 0, {}, '', 0}
end
local count = redis.call('INCR', KEYS[2])
if count == 1 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
local raw = redis.call('HGETALL', KEYS[3])
local b = {}
for i = 1, #raw, 2 do
  b[raw[i]] = tonumber(raw[i + 1])
end
local granted = b['granted'] or 0
local remaining = granted - (b['reserved'] or 0) - (b['spent'] or 0)
local over_rate = count > tonumber(ARGV[4])
local over_quota = granted > 0 and remaining < tonumber(ARGV[5])
if over_rate or over_quota then
  return {'', count, raw, '', 0}
end
-- The key's and its team's budget levels (their projected hashes and token limits, -1 none),
-- screened like the tenant's grant: the first level whose remaining tokens cannot cover the
-- tokens needed refuses, and nothing is written.
if #KEYS == 5 or #KEYS == 9 then
  local at_key, at_arg = 3, 5  -- KEYS[4..5], ARGV[6..7] when the key has no limits of its own
  if #KEYS == 9 then
    at_key, at_arg = 7, 12
  end
  for j = 1, 2 do
    local limit = tonumber(ARGV[at_arg + j])
    if limit >= 0 then
      local used = redis.call('HMGET', KEYS[at_key + j], 'reserved_tokens', 'spent_tokens')
      local left = limit - tonumber(used[1] or '0') - tonumber(used[2] or '0')
      if left < tonumber(ARGV[5]) then
        return {'', count, raw, '', 0, j == 1 and 'key' or 'team', left}
      end
    end
  end
end
if #KEYS <= 5 then  -- a key with no limits of its own: its key limits' KEYS and ARGV not sent
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return {'', count, raw, '', 0}
end
local needs, tpm, max_inflight = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now, rid, key_id = tonumber(ARGV[8]), ARGV[10], ARGV[11]
local tpm_tokens = tonumber(ARGV[12])
-- A request holding its tokens or slot already (its record was lost) is not held twice.
local tpm_held = tpm > 0 and redis.call('ZSCORE', KEYS[4], rid)
if tpm > 0 and not tpm_held then
  -- The minute's total is kept in the tokens hash (field '=total', never a request id), so a
  -- screen costs the entries that leave the minute, not all of them. At most 4000 leave per
  -- screen (unpack's limit): any left over still count, which only ever refuses more.
  local used = tonumber(redis.call('HGET', KEYS[7], '=total') or '0')
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - 60000, 'LIMIT', 0, 4000)
  if #old > 0 then
    local gone = redis.call('HMGET', KEYS[7], unpack(old))
    for i = 1, #gone do
      used = used - tonumber(gone[i] or '0')
    end
    redis.call('ZREM', KEYS[4], unpack(old))
    redis.call('HDEL', KEYS[7], unpack(old))
    redis.call('HSET', KEYS[7], '=total', used)
  end
  if used + tpm_tokens > tpm then
    local retry = -1
    if tpm_tokens <= tpm then
      -- the oldest entries leave the window first: wait until enough of them have
      local held = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
      for i = 1, #held, 2 do
        used = used - tonumber(redis.call('HGET', KEYS[7], held[i]) or '0')
        if used + tpm_tokens <= tpm then
          retry = tonumber(held[i + 1]) + 60000 - now
          break
        end
      end
    end
    return {'', count, raw, 'tokens_per_minute', retry}
  end
end
local slot_held = max_inflight > 0 and redis.call('HEXISTS', KEYS[5], rid) == 1
if max_inflight > 0 and not slot_held then
  local n = tonumber(redis.call('HGET', KEYS[6], key_id) or '0')
  if n >= max_inflight then
    -- At the cap: free this key's slots past their deadline (a request whose end was never
    -- released: a crash between its terminal status and the release).
    local slots = redis.call('HGETALL', KEYS[5])
    for i = 1, #slots, 2 do
      local deadline, owner = string.match(slots[i + 1], '^(%d+) (.*)$')
      if owner == key_id and tonumber(deadline) <= now then
        redis.call('HDEL', KEYS[5], slots[i])
        n = n - 1
      end
    end
    redis.call('HSET', KEYS[6], key_id, n)
    if n >= max_inflight then
      return {'', count, raw, 'in_flight', 1000}
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
if tpm > 0 and not tpm_held then
  redis.call('ZADD', KEYS[4], now, rid)
  redis.call('HSET', KEYS[7], rid, tpm_tokens)
  redis.call('HINCRBY', KEYS[7], '=total', tpm_tokens)
  redis.call('PEXPIRE', KEYS[4], 61000)
  redis.call('PEXPIRE', KEYS[7], 61000)
end
if max_inflight > 0 and not slot_held then
  local ttl = tonumber(ARGV[9])
  redis.call('HSET', KEYS[5], rid, (now + ttl) .. ' ' .. key_id)
  redis.call('HINCRBY', KEYS[6], key_id, 1)
  -- an idle tenant's slots all pass their deadline together with the hashes
  redis.call('PEXPIRE', KEYS[5], ttl)
  redis.call('PEXPIRE', KEYS[6], ttl)
end
return {'', count, raw, '', 0}
