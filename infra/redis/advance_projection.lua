-- Move the projection's last applied sequence forward, unless the projection was lost.
-- KEYS[1]: the last applied sequence; KEYS[2]: the projection's generation.
-- ARGV[1]: the generation the caller read before it read the events ('' = regardless);
-- ARGV[2]: the sequence of the last event it applied.
-- A generation that changed or vanished since the caller read (a flush, a rebuild) refuses:
-- -1. The sequence never moves back. Returns the last applied sequence.
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > last then
  redis.call('SET', KEYS[1], seq)
  last = seq
end
return last
