-- Remove an agent and its weight override; its load record stays (history survives a
-- re-registration until forget_idle). ARGV: prefix, id. Returns {removed 0/1, version}.
--- uses: keys, versions
local agent_id = ARGV[2]
if redis.call('HDEL', K.agents, agent_id) == 0 then return {0, false} end
redis.call('ZREM', K.order, agent_id)
redis.call('HDEL', K.weights, agent_id)
redis.call('HDEL', K.health, agent_id)
redis.call('HDEL', K.out, agent_id)
redis.call('HDEL', K.reports, agent_id)
bump_config()
return {1, bump_version()}
