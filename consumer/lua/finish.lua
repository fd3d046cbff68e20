-- Compare-and-delete: delete checkpoint and shadow only if the value is still the one archived.
-- KEYS: for each checkpoint, three keys: checkpoint, shadow, claim
-- ARGV: claim token, then each checkpoint's sha1 of the archived value
-- Returns one integer per checkpoint: 1 deleted, 0 changed since (kept), -1 already gone
local token = ARGV[1]
local replies = {}
for i = 1, #KEYS, 3 do
  local checkpoint, shadow, lock = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local value = redis.pcall('GET', checkpoint)  -- pcall: a key replaced by another type
  local result
  if type(value) == 'table' then
    result = 0
  elseif value == false then
    result = -1
  elseif redis.sha1hex(value) == ARGV[1 + (i + 2) / 3] then
    redis.call('DEL', checkpoint, shadow)
    result = 1
  else
    result = 0
  end
  if redis.call('GET', lock) == token then redis.call('DEL', lock) end
  replies[#replies + 1] = result
end
return replies
