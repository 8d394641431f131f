-- Apply one tenant's ledger events to its projected balance and budget levels, in ledger
-- order, atomically.
-- KEYS[1]: the projection's generation on one Redis; on a Redis Cluster, where it lies in
-- another slot, the first balance hash again (and no generation is checked).
-- KEYS[2..]: each event's hashes in turn, all of one tenant (one slot on a Redis Cluster):
-- its balance hash, then the hashes of the levels it moves (tenant, key, team), if any.
-- ARGV[1]: the generation the caller read before it read the events ('' = apply regardless);
-- then, for each event, 7 values: seq, how many hashes it moves, d_granted, d_reserved,
-- d_spent (the balance's), d_reserved_usd, d_spent_usd (with d_reserved and d_spent, the
-- levels').
-- A generation that changed or vanished since the caller read (a flush, a rebuild) refuses
-- the whole call: -1. Each hash records the sequence it is exact at (field `seq`): an event
-- at or below it is skipped there, so re-applying is harmless; one that is applied moves
-- `seq` to it. A zero delta writes no field. Returns how many events moved any hash.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local BALANCE = {'granted', 'reserved', 'spent'}
local LEVEL = {'reserved_tokens', 'spent_tokens', 'reserved_usd', 'spent_usd'}
local applied = 0
local k = 2
for a = 2, #ARGV, 7 do
  local seq = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local moved = false
  for j = 0, n - 1 do
    local key = KEYS[k + j]
    if seq > tonumber(redis.call('HGET', key, 'seq') or '0') then
      local names, first = BALANCE, a + 2
      if j > 0 then
        names, first = LEVEL, a + 3
      end
      for f = 1, #names do
        local d = ARGV[first + f - 1]
        if d ~= '0' then
          redis.call('HINCRBY', key, names[f], d)
        end
      end
      redis.call('HSET', key, 'seq', seq)
      moved = true
    end
  end
  if moved then
    applied = applied + 1
  end
  k = k + n
end
return applied
