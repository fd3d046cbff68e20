-- Compare-and-delete: delete checkpoint, shadow and hold mark only if the value is still the
-- one archived, then drop our claim. With keep, the checkpoint itself stays until its own TTL:
-- its shadow then holds 'done' until the checkpoint expires (claim.lua skips it), unless the
-- TTL is extended later (arm.lua re-arms it then, and it is archived again, idempotently).
-- KEYS: for each checkpoint, four keys: checkpoint, shadow, claim, hold mark
-- ARGV: claim token, reader ('string': GET, 'json': JSON.GET), keep ('1' or '0'), then for each
--       checkpoint: sha1, size, head. head 0: sha1 is the SHA-1 of the whole value; head > 0 (an
--       oversized value, never read whole): the value must be `size` bytes long and sha1 the
--       SHA-1 of its first `head` bytes.
-- Returns one integer per checkpoint: 1 deleted (or marked done), 0 changed since (kept),
-- -1 already gone
local token, json, keep = ARGV[1], ARGV[2] == 'json', ARGV[3] == '1'
local DONE_WITHOUT_TTL_MS = 86400000  -- a checkpoint without TTL: its 'done' mark lasts a day

local function done(checkpoint, shadow, mark)
  if not keep then
    redis.call('DEL', checkpoint, shadow, mark)
    return
  end
  local pttl = redis.call('PTTL', checkpoint)
  if pttl < 0 then pttl = DONE_WITHOUT_TTL_MS end
  redis.call('SET', shadow, 'done', 'PX', pttl)
  redis.call('DEL', mark)
end

local function unchanged(checkpoint, sha, size, head)
  if head > 0 and not json then
    return redis.pcall('STRLEN', checkpoint) == size
      and redis.sha1hex(redis.call('GETRANGE', checkpoint, 0, head - 1)) == sha
  end
  local value  -- pcall: a key replaced by another type
  if json then
    value = redis.pcall('JSON.GET', checkpoint)
  else
    value = redis.pcall('GET', checkpoint)
  end
  if type(value) ~= 'string' then return false end
  if head > 0 then return #value == size and redis.sha1hex(string.sub(value, 1, head)) == sha end
  return redis.sha1hex(value) == sha
end

local replies = {}
for i = 1, #KEYS, 4 do
  local checkpoint, shadow, lock, mark = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local at = 4 + 3 * (i - 1) / 4
  local result
  if redis.call('EXISTS', checkpoint) == 0 then
    result = -1
  elseif unchanged(checkpoint, ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])) then
    done(checkpoint, shadow, mark)
    result = 1
  else
    result = 0
  end
  if redis.call('GET', lock) == token then redis.call('DEL', lock) end
  replies[#replies + 1] = result
end
return replies
