-- Claim due checkpoints for archiving, or re-arm the shadow of those not due (any more).
-- KEYS: for each checkpoint, four keys: checkpoint, claim, shadow, hold mark (see hold.lua)
-- ARGV: token, lease_ms, hold_ms, due_ms, buffer_ms, archive_after_ms, max_payload, budget_bytes,
--       hold_span_ms (buffer + max hold), reader ('string': GET, 'json': JSON.GET), keep ('1':
--       archived checkpoints stay until their TTL, their shadow holding 'done'), then each
--       checkpoint's write time (ms since the epoch, from its key name; -1 unknown)
-- Returns one reply per checkpoint, {status, ms[, value | size]}:
--   gone | done (archived already, left to its TTL) | wrongtype (3rd: the type) | busy
--   | rearmed (ms = shadow TTL)
--   | deferred (ms = TTL): due, but this call already claimed budget_bytes of values; not claimed
--   | oversized (ms = TTL, 3rd: size): claimed, but over max_payload bytes, so not read
--   | claimed (ms = TTL, 3rd: value)
-- Sizes are checked (STRLEN) before any value is read. Times come from Redis's clock (TIME),
-- never from the caller's; a TTL is only ever extended (to hold_ms, unless the checkpoint's
-- hold ran out: ARCHIVER_MAX_HOLD), never shortened.
local token, lease, hold = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due, buffer, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_payload, budget, span = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local json, keep = ARGV[10] == 'json', ARGV[11] == '1'
local wanted_type = json and 'ReJSON-RL' or 'string'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local taken = 0

-- A checkpoint without a TTL is archived once ARCHIVE_AFTER old by its key's time; until then
-- its shadow gets the time left. One with a TTL is due once at most due_ms remain.
local function not_due_for(pttl, written)
  if pttl == -1 then
    local age = 0
    if written >= 0 then age = now - written end
    if after - age > 0 then return after - age end
    return nil
  end
  if pttl > due then return pttl - buffer end
  return nil
end

-- With keep, the application still owns the checkpoint's TTL: a claim does not extend it (the
-- value is read already; only a hold after a failed write does, bounded by max_hold).
local function keep_alive(checkpoint, mark, pttl)
  if keep or pttl == -1 or pttl >= hold then return pttl end
  local since = tonumber(redis.call('GET', mark))
  if since and since + span <= now then return pttl end
  redis.call('PEXPIRE', checkpoint, hold)
  return hold
end

-- A JSON document has no STRLEN: it is read (JSON.GET) to learn its size.
local function size_of(checkpoint)
  if not json then return redis.call('STRLEN', checkpoint), nil end
  local value = redis.call('JSON.GET', checkpoint)
  return #value, value
end

local function claim(checkpoint, lock, shadow, mark, written)
  local pttl = redis.call('PTTL', checkpoint)
  if pttl == -2 then return {'gone', -2} end
  local kind = redis.call('TYPE', checkpoint)['ok']
  if kind ~= wanted_type then return {'wrongtype', pttl, kind} end
  if keep and redis.call('GET', shadow) == 'done' then return {'done', pttl} end
  local left = not_due_for(pttl, written)
  if left then
    redis.call('SET', shadow, '', 'PX', left)
    return {'rearmed', left}
  end
  local size, value = size_of(checkpoint)
  local oversized = size > max_payload
  if not oversized and taken > 0 and taken + size > budget then
    return {'deferred', keep_alive(checkpoint, mark, pttl)}
  end
  if not redis.call('SET', lock, token, 'NX', 'PX', lease) then return {'busy', pttl} end
  pttl = keep_alive(checkpoint, mark, pttl)
  if oversized then return {'oversized', pttl, size} end
  taken = taken + size
  return {'claimed', pttl, value or redis.call('GET', checkpoint)}
end

local replies = {}
for i = 1, #KEYS, 4 do
  local written = tonumber(ARGV[11 + (i + 3) / 4])
  replies[#replies + 1] = claim(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], written)
end
return replies
