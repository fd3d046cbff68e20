-- Erasure: read the values of a page of checkpoint keys in one call, within a byte budget.
-- KEYS: checkpoint keys
-- ARGV: largest value read (ARCHIVER_MAX_PAYLOAD), byte budget of this reply
-- Returns one entry per key: the value; or its size (an integer) when it is not read (over
-- the largest value, or over what is left of the budget: the caller reads it on its own);
-- or false when the key is gone or not a string.
local limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local used, replies = 0, {}
for i = 1, #KEYS do
  local size = redis.pcall('STRLEN', KEYS[i])
  if type(size) ~= 'number' or size == 0 then
    replies[i] = false
  elseif size > limit or (used > 0 and used + size > budget) then
    replies[i] = size
  else
    replies[i] = redis.call('GET', KEYS[i])
    used = used + size
  end
end
return replies
