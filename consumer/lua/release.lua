-- Release leases (claims or the sweep lock) that we still hold.
-- KEYS: the leases; ARGV: token
local released = 0
for _, lease in ipairs(KEYS) do
  if redis.call('GET', lease) == ARGV[1] then released = released + redis.call('DEL', lease) end
end
return released
