-- Keep due checkpoints alive after a failed archive: set each one's expiry to its hold_until
-- (bounded by MAX_HOLD by the caller) if it still holds the value we claimed. Our claim stays
-- for backoff_ms, so that the TTL change's own `expire` event does not retry it at once.
-- KEYS: for each checkpoint, two keys: checkpoint, claim
-- ARGV: token, backoff_ms, then for each checkpoint: hold_until_ms, sha1 of the claimed value
local token, backoff = ARGV[1], ARGV[2]
for i = 1, #KEYS, 2 do
  local checkpoint, lock = KEYS[i], KEYS[i + 1]
  local until_ms, sha = ARGV[2 + i], ARGV[3 + i]
  local value = redis.pcall('GET', checkpoint)  -- pcall: a key replaced by another type
  if type(value) == 'string' and redis.sha1hex(value) == sha and redis.call('PTTL', checkpoint) >= 0 then
    redis.call('PEXPIREAT', checkpoint, until_ms)
  end
  if redis.call('GET', lock) == token then redis.call('PEXPIRE', lock, backoff) end
end
return #KEYS / 2
