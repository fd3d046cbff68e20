-- Release a lease (claim or sweep lock) if we still hold it.
-- KEYS: lease; ARGV: token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
