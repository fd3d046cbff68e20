-- Take due entries of the deadline index, pushing them back to retry_at so that a process
-- that dies holding them lets them come due again. KEYS: deadlines; ARGV: now_ms, limit, retry_at_ms
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], member) end
return due
