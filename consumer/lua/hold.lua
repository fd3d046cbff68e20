-- Keep a due checkpoint alive after a failed archive: set its expiry to hold_until (bounded by
-- MAX_HOLD by the caller) if it still holds the value we claimed. Our claim stays for
-- backoff_ms, so that the TTL change's own `expire` event does not retry it at once.
-- KEYS: checkpoint, claim; ARGV: hold_until_ms, sha1 of the claimed value, token, backoff_ms
local value = redis.call('GET', KEYS[1])
if value and redis.sha1hex(value) == ARGV[2] and redis.call('PTTL', KEYS[1]) >= 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return 1
