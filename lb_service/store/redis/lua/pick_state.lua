-- Everything one selection reads, as of one instant. ARGV: prefix, cached config
-- version, default strategy, session id ("" = none), the change number the replica's
-- copies of the load records are current to ("" = it holds none), then the candidate
-- ids. Returns {config version, configuration or false, state version or false,
-- sequence, bindings held, leases open, bound agent or false, binding last used or
-- false, ejections (flat id/until pairs), the ids whose records follow (false: every
-- registered agent, in registration order), their records, their change numbers (0
-- where none), their pending picks (false where none), the change counter now (false
-- before the first change), the
-- candidates' records in the order given, their pending picks, agents out by health
-- (flat id/'unhealthy'|'draining' pairs), load reports (flat id/report pairs), when the
-- newest report arrived (or false)}.
-- Every registered agent's record comes when the replica holds none or its cached
-- configuration is stale (the registry moved); otherwise only those changed since
-- (lib/changes.lua), so a pick reads what moved, not the whole fleet. Records come as
-- one string, one per line ("" where an id has none): one reply element instead of one
-- per agent keeps the client's parsing from dominating a pick over a large registry.
--- uses: keys, config
local config = config_version(ARGV[3])
local payload = false
if config ~= ARGV[2] then payload = config_payload() end
local session_id = ARGV[4]
local since = ARGV[5]
local bound, used = false, false
if session_id ~= '' then
  bound = redis.call('HGET', K.bindings, session_id)
  if bound then used = redis.call('ZSCORE', K.used, session_id) end
end
local candidates = {}
for i = 6, #ARGV do candidates[#candidates + 1] = ARGV[i] end
local function records(ids)
  local found = hmget(K.stats, ids)
  for i = 1, #found do
    if not found[i] then found[i] = '' end
  end
  return table.concat(found, '\n')
end
local every = payload or since == ''
local ids, numbers
if every then
  numbers = {}
  local registered = redis.call('ZRANGE', K.order, 0, -1)
  for i = 1, #registered do
    numbers[i] = redis.call('ZSCORE', K.changed, registered[i]) or '0'
  end
  ids = registered
else
  ids, numbers = {}, {}
  local changed = redis.call('ZRANGEBYSCORE', K.changed, '(' .. since, '+inf', 'WITHSCORES')
  for i = 1, #changed, 2 do
    ids[#ids + 1] = changed[i]
    numbers[#numbers + 1] = changed[i + 1]
  end
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
  not every and ids,
  records(ids),
  numbers,
  hmget(K.pending, ids),
  redis.call('GET', K.changes),
  records(candidates),
  hmget(K.pending, candidates),
  redis.call('HGETALL', K.out),
  redis.call('HGETALL', K.reports),
  redis.call('GET', K.reports_newest),
}
