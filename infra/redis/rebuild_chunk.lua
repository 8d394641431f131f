-- Write one chunk of a projection rebuild from the ledger's balances snapshot, atomically.
-- KEYS[1]: the rebuild's state hash (token, cursor, low); KEYS[2]: the generation;
-- KEYS[3]: the last applied sequence; KEYS[4..]: the chunk's balance hashes.
-- ARGV: token, the cursor the chunk was read after, the cursor after it, the sequence the
-- snapshot includes, 1 if this is the last chunk, then 3 values per hash: granted, reserved,
-- spent.
-- The chunk is refused (0) unless the rebuild is still this token's at that cursor: a flush
-- since the read, or another process that wrote the chunk first, leaves nothing half-done.
-- Each hash records the sequence it is exact at (`seq`); the apply script skips events at or
-- below it. The last chunk starts the new generation at the lowest such sequence.
local state = redis.call('HMGET', KEYS[1], 'token', 'cursor', 'low')
if state[1] ~= ARGV[1] or state[2] ~= ARGV[2] then
  return 0
end
local snapshot = tonumber(ARGV[4])
for i = 4, #KEYS do
  local base = 5 + (i - 4) * 3
  redis.call('HSET', KEYS[i], 'granted', ARGV[base + 1], 'reserved', ARGV[base + 2],
             'spent', ARGV[base + 3], 'seq', snapshot)
end
local low = tonumber(state[3] or ARGV[4])
if snapshot < low then
  low = snapshot
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], low)
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[1])
  return 2
end
redis.call('HSET', KEYS[1], 'cursor', ARGV[3], 'low', low)
return 1
