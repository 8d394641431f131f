-- Write one tenant's balances from the ledger's balances snapshot, atomically.
-- KEYS[1..n]: the tenant's balance hashes (one hash slot on a Redis Cluster).
-- ARGV[1]: the sequence the snapshot includes; then 3 values per hash: granted, reserved,
-- spent.
-- A hash already exact at a later sequence (field `seq`) is left alone: a slow rebuilder's
-- older snapshot never overwrites a newer one. Returns how many hashes were written.
local snapshot = tonumber(ARGV[1])
local written = 0
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 3
  if tonumber(redis.call('HGET', KEYS[i], 'seq') or '0') <= snapshot then
    redis.call('HSET', KEYS[i], 'granted', ARGV[base], 'reserved', ARGV[base + 1],
               'spent', ARGV[base + 2], 'seq', snapshot)
    written = written + 1
  end
end
return written
