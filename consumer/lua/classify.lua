-- For the sweeper: which checkpoints of one SCAN page to archive now, and which lack their
-- shadow or deadline-index entry. Only those come back, so a page of 1,000 mostly quiet
-- keys costs one small reply.
-- KEYS: the deadline index, then for each checkpoint: checkpoint, shadow
-- ARGV: due_ms, event_due_ms, index_polled (1/0), archive_after_ms, then each checkpoint's age_ms
-- Returns {due checkpoints, unhinted checkpoints}
local deadlines = KEYS[1]
local due_ms, event_due = tonumber(ARGV[1]), tonumber(ARGV[2])
local polled, after = ARGV[3] == '1', tonumber(ARGV[4])
local due, unhinted = {}, {}
for j = 1, (#KEYS - 1) / 2 do
  local checkpoint, shadow = KEYS[2 * j], KEYS[2 * j + 1]
  local pttl = redis.call('PTTL', checkpoint)
  if pttl ~= -2 then
    local hinted = redis.call('EXISTS', shadow) == 1
      and redis.call('ZSCORE', deadlines, checkpoint) ~= false
    local is_due
    if pttl >= 0 then
      local limit = due_ms
      if polled and hinted then limit = event_due end
      is_due = pttl <= limit
    else
      is_due = tonumber(ARGV[4 + j]) >= after
    end
    if is_due then
      due[#due + 1] = checkpoint
    elseif not hinted then
      unhinted[#unhinted + 1] = checkpoint
    end
  end
end
return {due, unhinted}
