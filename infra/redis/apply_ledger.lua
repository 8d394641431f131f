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
-- `seq` to it. Returns how many events moved any hash.
-- Why it reads and writes whole hashes: the events of a call share hashes (every event moves
-- its tenant's balance and level), so each hash is read once (HMGET) and written once at the
-- end (HSET), two commands a hash instead of a few an event; the call is atomic, so nothing
-- sees a hash between its events. Values are Lua numbers (doubles: exact below 2^53, far past
-- a period's tokens or micro-dollars), written as integers ('%d').
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local BALANCE = {'granted', 'reserved', 'spent'}
local LEVEL = {'reserved_tokens', 'spent_tokens', 'reserved_usd', 'spent_usd'}
local hashes, order = {}, {}
local applied = 0
local k = 2
for a = 2, #ARGV, 7 do
  local seq = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local moved = false
  for j = 0, n - 1 do
    local key = KEYS[k + j]
    local names, first = BALANCE, a + 2
    if j > 0 then
      names, first = LEVEL, a + 3
    end
    local h = hashes[key]
    if not h then
      local raw = redis.call('HMGET', key, 'seq', unpack(names))
      h = {seq = tonumber(raw[1] or '0'), names = names, values = {}, moved = false}
      for f = 1, #names do
        h.values[f] = tonumber(raw[f + 1] or '0')
      end
      hashes[key] = h
      order[#order + 1] = key
    end
    if seq > h.seq then
      for f = 1, #names do
        h.values[f] = h.values[f] + tonumber(ARGV[first + f - 1])
      end
      h.seq = seq
      h.moved = true
      moved = true
    end
  end
  if moved then
    applied = applied + 1
  end
  k = k + n
end
for _, key in ipairs(order) do
  local h = hashes[key]
  if h.moved then
    local fv = {'seq', string.format('%d', h.seq)}
    for f = 1, #h.names do
      fv[#fv + 1] = h.names[f]
      fv[#fv + 1] = string.format('%d', h.values[f])
    end
    redis.call('HSET', key, unpack(fv))
  end
end
return applied
