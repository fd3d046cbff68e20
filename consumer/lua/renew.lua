-- Extend a lease if we still hold it. KEYS: lease; ARGV: token, lease_ms
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
