-- Record that one chunk of a projection rebuild was written, atomically.
-- KEYS[1]: the rebuild's state hash (token, cursor, low); KEYS[2]: the generation;
-- KEYS[3]: the last applied sequence (all three in one hash slot).
-- ARGV: token, the cursor the chunk was read after, the cursor after it, the sequence the
-- snapshot includes, 1 if this is the last chunk.
-- Refused (0) unless the rebuild is still this token's at that cursor: a flush since the
-- read, or another process that recorded the chunk first. The chunk's balances were written
-- before (`rebuild_balances.lua`), each hash no further back than it already was, so a
-- refused chunk leaves nothing wrong. The last chunk starts the new generation at the lowest
-- snapshot sequence of the rebuild; the catch-up then applies what came after, and the apply
-- script skips, hash by hash, what a snapshot already holds.
local state = redis.call('HMGET', KEYS[1], 'token', 'cursor', 'low')
if state[1] ~= ARGV[1] or state[2] ~= ARGV[2] then
  return 0
end
local snapshot = tonumber(ARGV[4])
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
