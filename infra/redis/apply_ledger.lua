-- Apply ledger events to the balance projection, in ledger order, atomically.
-- KEYS[1]: the projection's last applied sequence; KEYS[2..n+1]: each event's balance hash.
-- ARGV: for each event, 4 values: seq, d_granted, d_reserved, d_spent.
-- An event at or below the last applied sequence is skipped, so re-applying is harmless.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local applied = 0
for i = 1, #KEYS - 1 do
  local base = (i - 1) * 4
  local seq = tonumber(ARGV[base + 1])
  if seq > last then
    local key = KEYS[i + 1]
    redis.call('HINCRBY', key, 'granted', ARGV[base + 2])
    redis.call('HINCRBY', key, 'reserved', ARGV[base + 3])
    redis.call('HINCRBY', key, 'spent', ARGV[base + 4])
    last = seq
    applied = applied + 1
  end
end
redis.call('SET', KEYS[1], last)
return {applied, last}
