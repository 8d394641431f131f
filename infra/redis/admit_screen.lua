-- admit's screening of one request, in one round trip and atomically.
-- KEYS[1] the request's recent-acceptance record (its payload hash), KEYS[2] the key's
-- one-minute window counter, KEYS[3] the tenant's projected balance hash.
-- ARGV: payload hash, record TTL s, window TTL s, rate limit per minute, tokens needed.
-- A request with a record is a resend: nothing is counted, its recorded hash is answered.
-- Otherwise the request is counted and the balance read; when the rate limit and the quota
-- pre-check both let it through, the record is written with its hash, so a resend of it is
-- recognised before the limits. The caller decides the refusal from the same count and
-- balance; this only keeps a refused request from leaving a record.
local known = redis.call('GET', KEYS[1])
if known then
  return {known, 0, {}}
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
if not over_rate and not over_quota then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
return {'', count, raw}
