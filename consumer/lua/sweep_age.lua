-- How long ago, by Redis's clock, the last sweep of any replica completed.
-- KEYS: the last-sweep key. Returns ms since the stamp; -1 if there is none (or it is not a
-- number); -2 if it lies in the future (written by a process whose clock ran ahead): ignore it.
local stamp = tonumber(redis.call('GET', KEYS[1]))
if not stamp then return -1 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local age = now - math.floor(stamp * 1000)
if age < 0 then return -2 end
return age
