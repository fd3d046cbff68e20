-- Record archive deadlines in the index, relative to Redis's clock (TIME).
-- KEYS: deadlines; ARGV: only_new (1: keep an entry already there, ZADD NX), then pairs of
--       member, ms from now
-- Returns how many entries were added.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local args = {}
if ARGV[1] == '1' then args[1] = 'NX' end
for i = 2, #ARGV, 2 do
  args[#args + 1] = now + tonumber(ARGV[i + 1])
  args[#args + 1] = ARGV[i]
end
return redis.call('ZADD', KEYS[1], unpack(args))
