-- Add or replace an agent. ARGV: prefix, id, agent JSON, now, declared parallel slots
-- (0 = learn them), max_agents (0 = no limit). A new id while max_agents are
-- registered changes nothing and returns 'max_agents' (store.base.Limit). A new
-- registration gets the next registration number and joined = now (slow start) in its
-- load record; the slots are stamped as capacity.stamp_slots stamps them (a changed
-- count booked with the busy time so far at the old count). An unchanged re-registration (dispatchers re-register on every start) leaves
-- the configuration version alone, so no replica reloads its cached registry for it.
-- Returns {'added' | 'changed' | 'unchanged' (store.base.Registered), version}.
--- uses: keys, versions, records, bookkeeping
local agent_id, json, now, slots = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local max_agents = tonumber(ARGV[6])
local previous = redis.call('HGET', K.agents, agent_id)
if not previous and max_agents > 0 and redis.call('HLEN', K.agents) >= max_agents then
  return 'max_agents'
end
local s = load_stats(agent_id)
local changed = false
if not s then s, changed = new_stats(), true end
if not previous then
  s.joined = now
  changed = true
  redis.call('ZADD', K.order, redis.call('HINCRBY', K.counters, 'registered', 1), agent_id)
end
local learn = 0
if slots == 0 then learn, slots = 1, s.slots end
if s.slots ~= slots or s.learn ~= learn then
  accrue(s, now)
  s.slots, s.learn = slots, learn
  changed = true
end
if changed then save_stats(agent_id, s) end
local outcome = 'unchanged'
if not previous then outcome = 'added' elseif previous ~= json then outcome = 'changed' end
if previous ~= json then
  redis.call('HSET', K.agents, agent_id, json)
  bump_config()
end
return {outcome, bump_version()}
