-- Free the in-flight slots of ended requests, atomically with the key's count.
-- KEYS[1] the tenant's in-flight slots (request id -> 'deadline_ms key_id'), KEYS[2] the
-- tenant's in-flight counts (key id -> count). ARGV: the request ids. An id holding no slot
-- (released before, purged past its deadline, or never limited) changes nothing.
local freed = 0
for _, rid in ipairs(ARGV) do
  local slot = redis.call('HGET', KEYS[1], rid)
  if slot then
    redis.call('HDEL', KEYS[1], rid)
    local key_id = string.match(slot, '^%d+ (.*)$')
    if redis.call('HINCRBY', KEYS[2], key_id, -1) <= 0 then
      redis.call('HDEL', KEYS[2], key_id)
    end
    freed = freed + 1
  end
end
return freed
