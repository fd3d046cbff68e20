-- Erasure: delete a checkpoint of an erased subject with its shadow, claim and hold mark, but
-- only if it still holds the value that was read and found to be the subject's (never a value
-- written since, which may be someone else's after a key was reused).
-- KEYS: for each checkpoint, four keys: checkpoint, shadow, claim, hold mark
-- ARGV: for each checkpoint, the SHA-1 of the value read
-- Returns one integer per checkpoint: 1 deleted, 0 changed since (kept), -1 already gone
-- (its companions deleted all the same)
local replies = {}
for i = 1, #KEYS, 4 do
  local checkpoint, shadow, lock, mark = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local value = redis.pcall('GET', checkpoint)  -- pcall: a key replaced by another type
  local result
  if value == false then
    redis.call('DEL', shadow, lock, mark)
    result = -1
  elseif type(value) == 'string' and redis.sha1hex(value) == ARGV[1 + (i - 1) / 4] then
    redis.call('DEL', checkpoint, shadow, lock, mark)
    result = 1
  else
    result = 0
  end
  replies[#replies + 1] = result
end
return replies
