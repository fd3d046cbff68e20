-- For the sweeper: which checkpoints of one SCAN page to archive now, and which lack their
-- shadow or deadline-index entry. Only those come back, so a page of 1,000 mostly quiet
-- keys costs one small reply. Checkpoints without a TTL come back too: whether they are due
-- depends on their key's timestamp, which the caller parses.
-- KEYS: the deadline index, then for each checkpoint: checkpoint, shadow
-- ARGV: due_ms, event_due_ms, index_polled (1/0)
-- Returns {due, unhinted, without_ttl, without_ttl_hinted (1/0 each)}
local deadlines = KEYS[1]
local due_ms, event_due, polled = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local due, unhinted, persistent, persistent_hinted = {}, {}, {}, {}
for j = 1, (#KEYS - 1) / 2 do
  local checkpoint, shadow = KEYS[2 * j], KEYS[2 * j + 1]
  local pttl = redis.call('PTTL', checkpoint)
  if pttl ~= -2 then
    local hinted = redis.call('EXISTS', shadow) == 1
      and redis.call('ZSCORE', deadlines, checkpoint) ~= false
    if pttl == -1 then
      persistent[#persistent + 1] = checkpoint
      persistent_hinted[#persistent_hinted + 1] = hinted and 1 or 0
    else
      local limit = due_ms
      if polled and hinted then limit = event_due end
      if pttl <= limit then
        due[#due + 1] = checkpoint
      elseif not hinted then
        unhinted[#unhinted + 1] = checkpoint
      end
    end
  end
end
return {due, unhinted, persistent, persistent_hinted}
