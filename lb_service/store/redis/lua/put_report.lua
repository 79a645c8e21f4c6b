-- Keep an agent's freshest load report with the leases open on it now, as one step.
-- ARGV: prefix, agent id, now (unix ms), the report as JSON (records.py
-- encode_report). Returns the new state version (WatchLoads shows the report), or
-- false when the agent is not registered (nothing kept).
--- uses: keys, records, versions
local agent_id, now_ms, report = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', K.agents, agent_id) == 0 then return false end
local stats = load_stats(agent_id)
local leases = 0
if stats then leases = stats.active end
redis.call('HSET', K.reports, agent_id, now_ms .. ' ' .. int(leases) .. ' ' .. report)
if tonumber(redis.call('GET', K.reports_newest) or '0') < tonumber(now_ms) then
  redis.call('SET', K.reports_newest, now_ms)
end
return bump_version()
