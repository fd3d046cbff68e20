-- Keep due checkpoints alive after a failed archive, if each still holds the value we claimed:
-- extend its TTL to extend_ms from now, never shortening it, for at most buffer_ms +
-- max_hold_ms after its first hold (ARCHIVER_MAX_HOLD past the moment it would have expired).
-- The first hold's time, by Redis's clock, is kept in the hold mark (deleted by finish.lua).
-- Our claim stays for backoff_ms, so that nothing retries these keys before their scheduled
-- retry (the TTL change's own `expire` event included).
-- KEYS: for each checkpoint, three keys: checkpoint, claim, hold mark
-- ARGV: token, backoff_ms, extend_ms, buffer_ms, max_hold_ms, reader ('string' or 'json'), then
--       for each checkpoint: sha1, size, head (as in finish.lua)
-- Returns one integer per checkpoint: ms of hold left (0: exhausted, it expires at its TTL),
-- -1 if not held (changed, gone, or without a TTL, which needs no hold).
local token, backoff, extend = ARGV[1], ARGV[2], tonumber(ARGV[3])
local span = tonumber(ARGV[4]) + tonumber(ARGV[5])
local json = ARGV[6] == 'json'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

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

local function hold(checkpoint, mark)
  local pttl = redis.call('PTTL', checkpoint)
  if pttl < 0 then return -1 end
  local since = tonumber(redis.call('GET', mark))
  if not since then
    since = now
    redis.call('SET', mark, since, 'PX', span + extend)
  end
  local limit = since + span
  local wanted = math.min(now + extend, limit) - now
  if wanted > pttl then redis.call('PEXPIRE', checkpoint, wanted) end
  return math.max(0, limit - now)
end

local replies = {}
for i = 1, #KEYS, 3 do
  local checkpoint, lock, mark = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local at = 7 + (i - 1)
  local left = -1
  if unchanged(checkpoint, ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])) then
    left = hold(checkpoint, mark)
  end
  if redis.call('GET', lock) == token then redis.call('PEXPIRE', lock, backoff) end
  replies[#replies + 1] = left
end
return replies
