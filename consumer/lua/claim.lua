-- Claim a due checkpoint for archiving, or re-arm its shadow if it is not due (any more).
-- KEYS: checkpoint, claim, shadow
-- ARGV: token, lease_ms, hold_ms, due_ms, buffer_ms, age_ms, archive_after_ms
-- Returns {status, ms[, value]}: gone | wrongtype | busy | rearmed (ms = shadow TTL) | claimed (ms = TTL)
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return {'gone', -2} end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then return {'wrongtype', pttl, kind} end
if pttl == -1 then
  local left = tonumber(ARGV[7]) - tonumber(ARGV[6])
  if left > 0 then
    redis.call('SET', KEYS[3], '', 'PX', left)
    return {'rearmed', left}
  end
elseif pttl > tonumber(ARGV[4]) then
  local left = pttl - tonumber(ARGV[5])
  redis.call('SET', KEYS[3], '', 'PX', left)
  return {'rearmed', left}
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'busy', pttl}
end
if pttl ~= -1 and pttl < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  pttl = tonumber(ARGV[3])
end
return {'claimed', pttl, redis.call('GET', KEYS[1])}
