-- Join the projection rebuild under way, or start one: its token and cursor.
-- KEYS[1]: the rebuild's state hash. ARGV[1]: a new token; ARGV[2]: the starting cursor.
redis.call('HSETNX', KEYS[1], 'token', ARGV[1])
redis.call('HSETNX', KEYS[1], 'cursor', ARGV[2])
return redis.call('HMGET', KEYS[1], 'token', 'cursor')
