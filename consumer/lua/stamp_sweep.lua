-- Record that a sweep completed now, by Redis's clock: every replica reads the stamp against
-- the same clock (sweep_age.lua), whatever its own says.
-- KEYS: the last-sweep key. Returns the stamp: unix seconds with microseconds, as text.
local clock = redis.call('TIME')
local stamp = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
redis.call('SET', KEYS[1], stamp)
return stamp
