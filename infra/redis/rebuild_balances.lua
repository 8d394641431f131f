-- Write one tenant's balances or budget levels from a ledger snapshot, atomically.
-- KEYS[1..n]: the tenant's hashes (one hash slot on a Redis Cluster).
-- ARGV[1]: the sequence the snapshot includes; ARGV[2]: how many fields a hash has (f);
-- ARGV[3..2+f]: their names; then f values per hash.
-- A hash already exact at a later sequence (field `seq`) is left alone: a slow rebuilder's
-- older snapshot never overwrites a newer one. Returns how many hashes were written.
local snapshot = tonumber(ARGV[1])
local f = tonumber(ARGV[2])
local written = 0
for i = 1, #KEYS do
  local base = 3 + f + (i - 1) * f
  if tonumber(redis.call('HGET', KEYS[i], 'seq') or '0') <= snapshot then
    local fv = {'seq', snapshot}
    for j = 1, f do
      fv[#fv + 1] = ARGV[2 + j]
      fv[#fv + 1] = ARGV[base + j - 1]
    end
    redis.call('HSET', KEYS[i], unpack(fv))
    written = written + 1
  end
end
return written
