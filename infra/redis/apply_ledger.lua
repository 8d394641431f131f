-- Apply ledger events to the balance projection, in ledger order, atomically.
-- KEYS[1]: the last applied sequence; KEYS[2]: the projection's generation;
-- KEYS[3..n+2]: each event's balance hash.
-- ARGV[1]: the generation the caller read before it read the events ('' = apply regardless);
-- then, for each event, 4 values: seq, d_granted, d_reserved, d_spent.
-- A generation that changed or vanished since the caller read (a flush, a rebuild) refuses
-- the whole call: {-1, last}. An event at or below the last applied sequence, or at or below
-- the sequence its balance was rebuilt at (field `seq`), is skipped: re-applying is harmless.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {-1, last}
end
local applied = 0
for i = 1, #KEYS - 2 do
  local base = 1 + (i - 1) * 4
  local seq = tonumber(ARGV[base + 1])
  local key = KEYS[i + 2]
  local rebuilt = tonumber(redis.call('HGET', key, 'seq') or '0')
  if seq > last and seq > rebuilt then
    redis.call('HINCRBY', key, 'granted', ARGV[base + 2])
    redis.call('HINCRBY', key, 'reserved', ARGV[base + 3])
    redis.call('HINCRBY', key, 'spent', ARGV[base + 4])
    applied = applied + 1
  end
  if seq > last then
    last = seq
  end
end
redis.call('SET', KEYS[1], last)
return {applied, last}
