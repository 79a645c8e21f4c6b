-- Everything one selection reads, as of one instant. ARGV: prefix, cached config
-- version, default strategy, session id ("" = none), then the candidate ids.
-- Returns {config version, configuration or false, state version or false, sequence,
-- bindings held, leases open, bound agent or false, binding last used or false,
-- ejections (flat id/until pairs), records of the registered agents in registration
-- order, records of the candidates in the order given, agents out by health (flat
-- id/'unhealthy'|'draining' pairs), pending picks (flat id/count pairs, only the ids
-- that have some), load reports (flat id/report pairs), when the newest report arrived
-- (or false)}. Records come as one string,
-- one per line ("" where an id has none): one reply element instead of one per agent
-- keeps the client's parsing from dominating a pick over a large registry.
--- uses: keys, config
local config = config_version(ARGV[3])
local payload = false
if config ~= ARGV[2] then payload = config_payload() end
local session_id = ARGV[4]
local bound, used = false, false
if session_id ~= '' then
  bound = redis.call('HGET', K.bindings, session_id)
  if bound then used = redis.call('ZSCORE', K.used, session_id) end
end
local candidates = {}
for i = 5, #ARGV do candidates[#candidates + 1] = ARGV[i] end
local function records(ids)
  local found = hmget(K.stats, ids)
  for i = 1, #found do
    if not found[i] then found[i] = '' end
  end
  return table.concat(found, '\n')
end
return {
  config,
  payload,
  redis.call('GET', K.version),
  tonumber(redis.call('HGET', K.counters, 'sequence') or 0),
  redis.call('HLEN', K.bindings),
  redis.call('HLEN', K.leases),
  bound,
  used,
  redis.call('HGETALL', K.ejections),
  records(redis.call('ZRANGE', K.order, 0, -1)),
  records(candidates),
  redis.call('HGETALL', K.out),
  redis.call('HGETALL', K.pending),
  redis.call('HGETALL', K.reports),
  redis.call('GET', K.reports_newest),
}
