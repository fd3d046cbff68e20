-- langgraph-redis with ARCHIVER_DELETE_ARCHIVED=1: delete a whole thread (every family of its
-- keys) once its latest checkpoint is archived, atomically, only if the thread did not move on.
-- KEYS: the archived checkpoint, its latest pointer (ShallowRedisSaver, which has none: the
--       checkpoint again), the index of its pending writes, then `roots` pairs (root checkpoint,
--       its shadow), then every other key of the thread (subgraph checkpoints, pointers, write
--       indexes, writes)
--       indexes, writes); the first pair is the archived checkpoint and its shadow
-- ARGV: SHA-1 of the archived value (JSON.GET), how many pending writes its index listed,
--       roots, retry_ms
-- Returns 1 deleted; 0 moved on (the pointer names another checkpoint): kept, the new latest
-- deletes it; 2 another root checkpoint is not archived yet, or 3 the value or its pending
-- writes changed since: kept, and its shadow re-armed for retry_ms (archived again then, and
-- the deletion tried again); -1 gone.
local checkpoint, latest, writes, shadow = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local sha, listed, roots, retry = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local function again(result)
  redis.call('SET', shadow, '', 'PX', retry)
  return result
end

if redis.call('EXISTS', checkpoint) == 0 then return -1 end
if latest ~= checkpoint and redis.call('GET', latest) ~= checkpoint then return 0 end
local value = redis.pcall('JSON.GET', checkpoint)
if type(value) ~= 'string' or redis.sha1hex(value) ~= sha then return again(3) end
if redis.call('ZCARD', writes) ~= listed then return again(3) end
for i = 6, 3 + 2 * roots, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('GET', KEYS[i + 1]) ~= 'done' then
    return again(2)
  end
end
for i = 1, #KEYS, 500 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 499, #KEYS)))
end
return 1
