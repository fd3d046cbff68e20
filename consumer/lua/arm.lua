-- Create or refresh a checkpoint's shadow from the checkpoint's remaining TTL.
-- KEYS: checkpoint, shadow, claim
-- ARGV: buffer_ms, age_ms, archive_after_ms
-- Returns the shadow TTL in ms; 0 if the checkpoint is already due; -2 if it is gone;
-- -3 if it is claimed (being archived, or backing off after a failure): its archiver re-arms it;
-- A shadow already right (within a second) is left alone: no write, no `set` event.
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return -2 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -3 end
local left
if pttl == -1 then
  left = tonumber(ARGV[3]) - tonumber(ARGV[2])
else
  left = pttl - tonumber(ARGV[1])
end
if left <= 0 then return 0 end
local current = redis.call('PTTL', KEYS[2])
if current > 0 and math.abs(current - left) < 1000 then return current end
redis.call('SET', KEYS[2], '', 'PX', left)
return left
