-- For the sweeper: which checkpoints of one SCAN page to archive now, and which lack their
-- shadow or deadline-index entry. Only those come back, so a page of 1,000 mostly quiet
-- keys costs one small reply. A checkpoint without a TTL is due once ARCHIVE_AFTER old by its
-- key's time, compared with Redis's clock (TIME), never the caller's.
-- KEYS: the deadline index, then for each checkpoint: checkpoint, shadow
-- ARGV: due_ms, event_due_ms, index_polled (1/0), archive_after_ms, keep (1: an archived
--       checkpoint stays until its TTL, its shadow holding 'done': neither due nor unhinted,
--       unless its TTL was extended past the mark), then each checkpoint's write time (ms since
--       the epoch, from its key name; -1 unknown: never due by age)
-- Returns {due, unhinted}
local deadlines = KEYS[1]
local due_ms, event_due, polled = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local after, keep = tonumber(ARGV[4]), ARGV[5] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due, unhinted = {}, {}
for j = 1, (#KEYS - 1) / 2 do
  local checkpoint, shadow = KEYS[2 * j], KEYS[2 * j + 1]
  local pttl = redis.call('PTTL', checkpoint)
  if pttl ~= -2 and keep and redis.call('GET', shadow) == 'done' then
    if pttl ~= -1 and redis.call('PTTL', shadow) < pttl - 1000 then
      unhinted[#unhinted + 1] = checkpoint
    end
  elseif pttl ~= -2 then
    local hinted = redis.call('EXISTS', shadow) == 1
      and redis.call('ZSCORE', deadlines, checkpoint) ~= false
    local written = tonumber(ARGV[5 + j])
    local is_due
    if pttl == -1 then
      is_due = written >= 0 and now - written >= after
    else
      local limit = due_ms
      if polled and hinted then limit = event_due end
      is_due = pttl <= limit
    end
    if is_due then
      due[#due + 1] = checkpoint
    elseif not hinted then
      unhinted[#unhinted + 1] = checkpoint
    end
  end
end
return {due, unhinted}
