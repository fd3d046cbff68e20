-- Take due entries of the deadline index, pushing them back to retry_after_ms from now so that
-- a process that dies holding them lets them come due again. Scores are ms since the epoch
-- by Redis's clock (TIME): every archiver agrees on what is due, whatever its own clock says.
-- KEYS: deadlines; ARGV: limit, retry_after_ms
-- Returns {taken members, how many entries are still due after these}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local retry_at = now + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], retry_at, member) end
return {due, redis.call('ZCOUNT', KEYS[1], '-inf', now)}
