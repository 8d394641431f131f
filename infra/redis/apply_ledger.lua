-- Apply one tenant's ledger events to its balance projection, in ledger order, atomically.
-- KEYS[1]: the projection's generation on one Redis; on a Redis Cluster, where it lies in
-- another slot, the first balance hash again (and no generation is checked).
-- KEYS[2..n+1]: each event's balance hash (all of one tenant: one slot on a Redis Cluster).
-- ARGV[1]: the generation the caller read before it read the events ('' = apply regardless);
-- then, for each event, 4 values: seq, d_granted, d_reserved, d_spent.
-- A generation that changed or vanished since the caller read (a flush, a rebuild) refuses
-- the whole call: -1. Each hash records the sequence it is exact at (field `seq`): an event
-- at or below it is skipped, so re-applying is harmless; one that is applied moves `seq` to
-- it. Returns how many events were applied.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local applied = 0
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 4
  local seq = tonumber(ARGV[base])
  local key = KEYS[i]
  if seq > tonumber(redis.call('HGET', key, 'seq') or '0') then
    redis.call('HINCRBY', key, 'granted', ARGV[base + 1])
    redis.call('HINCRBY', key, 'reserved', ARGV[base + 2])
    redis.call('HINCRBY', key, 'spent', ARGV[base + 3])
    redis.call('HSET', key, 'seq', seq)
    applied = applied + 1
  end
end
return applied
