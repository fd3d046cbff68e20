-- Claim due checkpoints for archiving, or re-arm the shadow of those not due (any more).
-- KEYS: for each checkpoint, three keys: checkpoint, claim, shadow
-- ARGV: token, lease_ms, hold_ms, due_ms, buffer_ms, archive_after_ms, then each checkpoint's age_ms
-- Returns one reply per checkpoint, {status, ms[, value]}:
--   gone | wrongtype (3rd: the type) | busy | rearmed (ms = shadow TTL) | claimed (ms = TTL, 3rd: value)
local token, lease, hold = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due, buffer, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local function claim(checkpoint, lock, shadow, age)
  local pttl = redis.call('PTTL', checkpoint)
  if pttl == -2 then return {'gone', -2} end
  local kind = redis.call('TYPE', checkpoint)['ok']
  if kind ~= 'string' then return {'wrongtype', pttl, kind} end
  local left = nil
  if pttl == -1 then
    if after - age > 0 then left = after - age end
  elseif pttl > due then
    left = pttl - buffer
  end
  if left then
    redis.call('SET', shadow, '', 'PX', left)
    return {'rearmed', left}
  end
  if not redis.call('SET', lock, token, 'NX', 'PX', lease) then return {'busy', pttl} end
  if pttl ~= -1 and pttl < hold then
    redis.call('PEXPIRE', checkpoint, hold)
    pttl = hold
  end
  return {'claimed', pttl, redis.call('GET', checkpoint)}
end

local replies = {}
for i = 1, #KEYS, 3 do
  replies[#replies + 1] = claim(KEYS[i], KEYS[i + 1], KEYS[i + 2], tonumber(ARGV[6 + (i + 2) / 3]))
end
return replies
