-- Create or refresh checkpoints' shadows from the checkpoints' remaining TTLs.
-- KEYS: for each checkpoint, three keys: checkpoint, shadow, claim
-- ARGV: buffer_ms, archive_after_ms, keep ('1': archived checkpoints stay until their TTL, their
--       shadow holding 'done'), then each checkpoint's write time (ms since the epoch, from its
--       key name; -1 unknown)
-- Returns one integer per checkpoint: the shadow TTL in ms; 0 if already due; -2 if gone;
-- -3 if claimed (being archived, or backing off after a failure: its archiver re-arms it);
-- -4 if archived and left to its TTL (a TTL extended past its 'done' mark re-arms it).
-- A shadow already right (within a second) is left alone: no write, no `set` event.
-- A checkpoint without a TTL is due ARCHIVE_AFTER after its key's time, by Redis's clock.
local buffer, after, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function arm(checkpoint, shadow, lock, written)
  local pttl = redis.call('PTTL', checkpoint)
  if pttl == -2 then return -2 end
  if redis.call('EXISTS', lock) == 1 then return -3 end
  if keep and redis.call('GET', shadow) == 'done' then
    if pttl == -1 or redis.call('PTTL', shadow) >= pttl - 1000 then return -4 end
    redis.call('DEL', shadow)
  end
  local left
  if pttl == -1 then
    local age = 0
    if written >= 0 then age = now - written end
    left = after - age
  else
    left = pttl - buffer
  end
  if left <= 0 then return 0 end
  local current = redis.call('PTTL', shadow)
  if current > 0 and math.abs(current - left) < 1000 then return current end
  redis.call('SET', shadow, '', 'PX', left)
  return left
end

local replies = {}
for i = 1, #KEYS, 3 do
  replies[#replies + 1] = arm(KEYS[i], KEYS[i + 1], KEYS[i + 2], tonumber(ARGV[3 + (i + 2) / 3]))
end
return replies
