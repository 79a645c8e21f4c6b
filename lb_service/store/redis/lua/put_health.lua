-- Replace an agent's health record, compare-and-set. ARGV: prefix, agent id, the new
-- record, the record expected now ("" = none), the agent's out value ("" = healthy,
-- else 'unhealthy' | 'draining'). Returns 'unknown-agent' when the agent is not
-- registered, 'conflict' when the record is not the one expected (nothing changed
-- either way), else {'applied', version}.
--- uses: keys, versions
local agent_id, record, expected, out = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', K.agents, agent_id) == 0 then return 'unknown-agent' end
local current = redis.call('HGET', K.health, agent_id) or ''
if current ~= expected then return 'conflict' end
redis.call('HSET', K.health, agent_id, record)
if out == '' then
  redis.call('HDEL', K.out, agent_id)
else
  redis.call('HSET', K.out, agent_id, out)
end
return {'applied', bump_version()}
