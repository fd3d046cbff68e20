-- Compare-and-delete: delete checkpoint, shadow and hold mark only if the value is still the
-- one archived, then drop our claim.
-- KEYS: for each checkpoint, four keys: checkpoint, shadow, claim, hold mark
-- ARGV: claim token, then for each checkpoint: sha1, size, head. head 0: sha1 is the SHA-1 of
--       the whole value; head > 0 (an oversized value, never read whole): the value must be
--       `size` bytes long and sha1 the SHA-1 of its first `head` bytes.
-- Returns one integer per checkpoint: 1 deleted, 0 changed since (kept), -1 already gone
local token = ARGV[1]

local function unchanged(checkpoint, sha, size, head)
  if head > 0 then
    return redis.pcall('STRLEN', checkpoint) == size
      and redis.sha1hex(redis.call('GETRANGE', checkpoint, 0, head - 1)) == sha
  end
  local value = redis.pcall('GET', checkpoint)  -- pcall: a key replaced by another type
  return type(value) == 'string' and redis.sha1hex(value) == sha
end

local replies = {}
for i = 1, #KEYS, 4 do
  local checkpoint, shadow, lock, mark = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local at = 2 + 3 * (i - 1) / 4
  local result
  if redis.call('EXISTS', checkpoint) == 0 then
    result = -1
  elseif unchanged(checkpoint, ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])) then
    redis.call('DEL', checkpoint, shadow, mark)
    result = 1
  else
    result = 0
  end
  if redis.call('GET', lock) == token then redis.call('DEL', lock) end
  replies[#replies + 1] = result
end
return replies
