-- Forget the load records of ids neither registered nor holding a lease that went
-- unused since the cutoff, or beyond the `keep` most recently used (ties: first seen
-- first, the memory store's order); their selections move to "". ARGV: prefix,
-- cutoff, keep. Returns {how many went, version or false}.
--- uses: keys, versions, records
local idle_since, keep = tonumber(ARGV[2]), tonumber(ARGV[3])
local idle = {}
local records = redis.call('HGETALL', K.stats)
for i = 1, #records, 2 do
  local agent_id = records[i]
  if redis.call('HEXISTS', K.agents, agent_id) == 0
    and redis.call('EXISTS', agent_leases_key(agent_id)) == 0 then
    local s = decode_stats(records[i + 1])
    idle[#idle + 1] = {id = agent_id, seen = s.seen, born = s.born}
  end
end
table.sort(idle, function(a, b)
  if a.seen ~= b.seen then return a.seen > b.seen end
  return a.born < b.born
end)
local gone = 0
for n, entry in ipairs(idle) do
  if n > keep or entry.seen < idle_since then
    redis.call('HDEL', K.stats, entry.id)
    redis.call('ZREM', K.changed, entry.id)
    -- Its pending picks go with its history (PendingPicks.forget).
    redis.call('HDEL', K.pending, entry.id)
    redis.call('DEL', pending_key(entry.id))
    local selections = tonumber(redis.call('HGET', K.selections, entry.id) or 0)
    if selections > 0 then
      redis.call('HDEL', K.selections, entry.id)
      redis.call('HINCRBY', K.selections, '', selections)
    end
    gone = gone + 1
  end
end
if gone == 0 then return {0, false} end
return {gone, bump_version()}
