-- Lower what a request holds in its key's rolling minute to what the ledger reserved for it
-- (0 when it refused: a refused reservation counts nothing). Never raises it: the door held
-- an upper bound, so lowering keeps the key within its tokens per minute.
-- KEYS[1] the key's rolling minute (request ids by admission ms), KEYS[2] its tokens by
-- request id and their total (field '=total'). ARGV: request id, tokens reserved.
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local reserved = tonumber(ARGV[2])
if held < 0 or reserved >= held then
  return 0
end
redis.call('HINCRBY', KEYS[2], '=total', reserved - held)
if reserved == 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], reserved)
end
return held - reserved
