-- Compare-and-delete: delete checkpoint and shadow only if the value is still the one archived.
-- KEYS: checkpoint, shadow, claim
-- ARGV: sha1 of the archived value, claim token
-- Returns 1 deleted, 0 changed since (kept), -1 already gone
local value = redis.call('GET', KEYS[1])
local result
if value == false then
  result = -1
elseif redis.sha1hex(value) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  result = 1
else
  result = 0
end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return result
