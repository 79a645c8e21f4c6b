-- The Redis store's scripts (lb_service/store/redis.py loads this file).
--
-- The file is split at the "--- script: <name>" lines. The "common" section is put in
-- front of every other section, so each script is that prelude plus its own body, run
-- with EVALSHA (redis-py's Script loads it again after a Redis restart: NOSCRIPT).
-- Each script runs atomically: nothing else touches the keys while it runs, which is
-- what makes "select and increment", "a session binds once" and "a lease ends once"
-- hold across replicas.
--
-- Calling convention: ARGV[1] is the key prefix; every key is "<prefix>:<name>". The
-- scripts derive the key names (including one per agent with open leases) from the
-- prefix instead of declaring them in KEYS, so all of a prefix's keys must live on one
-- Redis node (a standalone or Sentinel-managed server; on Cluster, a hash-tag prefix
-- such as "{lb}"). Numbers travel as text: Python sends repr() of its floats and the
-- scripts write floats with %.17g, both of which round-trip a double exactly. Counts
-- and unix-ms times are whole numbers below 2^53, exact in Lua's doubles.
--
-- No rule of the balancer is written here. Every rule is written once, in Python:
-- the scripts keep the bookkeeping that must be atomic with a lease (counts, busy
-- time; the few lines of feedback.open_lease/close_lease, see book_open/book_close),
-- write back the estimates Python computed (write_estimates, a compare-and-set), and
-- re-rank a pick's contenders with one generic comparison whose inputs the strategy
-- computed (commit_pick).
--
-- Redis >= 5 (scripts replicate their effects, so TIME may be called before a write).

--- script: common
local PREFIX = ARGV[1] .. ':'
local K = {
  -- string: the state version. Every change to what a pick or a load reading sees
  -- INCRs it; replicas poll it to wake WatchLoads (see seed_counter for its start).
  version = PREFIX .. 'version',
  -- string: the configuration version. INCR'd with every registry, weight or strategy
  -- change; replicas compare it to the one they cached the configuration at.
  config = PREFIX .. 'config',
  -- string: the strategy's name (written once with SET NX, then by set_strategy).
  strategy = PREFIX .. 'strategy',
  -- hash: agent id -> the agent as JSON (the registry).
  agents = PREFIX .. 'agents',
  -- sorted set: agent id -> registration number (registration order; re-putting a
  -- registered agent keeps its number, so it keeps its position).
  order = PREFIX .. 'order',
  -- hash: agent id -> weight override.
  weights = PREFIX .. 'weights',
  -- hash: agent id -> load record (see encode_stats) of every id ever seen.
  stats = PREFIX .. 'stats',
  -- hash: service counters. sequence (picks committed: rotates ties and round-robin),
  -- selections, failed, issued (request ids issued: the <n> of "<epoch>-<n>"),
  -- latency_sum (%.17g), samples, registered (registration numbers), born (load
  -- record numbers: the order ids were first seen in, as the memory store keeps it).
  counters = PREFIX .. 'counters',
  -- hash: agent id -> selections committed for it ("" holds forgotten ids' ones).
  selections = PREFIX .. 'selections',
  -- hash: session id -> the agent it is bound to.
  bindings = PREFIX .. 'bindings',
  -- sorted set: session id -> when its binding was last used (unix ms), for expiry.
  used = PREFIX .. 'used',
  -- hash: request id -> "<started_at_ms>[,<model>] <agent id>" for every open lease:
  -- the model its request asked for (percent-encoded by redis.py, so it holds no space
  -- or comma; left out when none, as in records written before it existed).
  leases = PREFIX .. 'leases',
  -- sorted set: request id -> its number n: open leases in the order they started.
  lease_order = PREFIX .. 'lease_order',
  -- hash: agent id -> ejected until (unix ms); entries whose time is up stay until
  -- expire_ejections, as in the memory store.
  ejections = PREFIX .. 'ejections',
  -- hash: agent id -> health record (store/health.py encode_health) of registered
  -- agents that have one; written compare-and-set by put_health.
  health = PREFIX .. 'health',
  -- hash: agent id -> 'unhealthy' | 'draining' for registered agents that are out
  -- (model.AgentHealth values): what every pick reads, usually empty.
  out = PREFIX .. 'out',
  -- string: random hex naming this prefix's request ids; created with SET NX by the
  -- first script that issues an id (again after a Redis restart lost it).
  epoch = PREFIX .. 'epoch',
  -- Pending picks (lb_service.store.pending; see hold_pick below). hash: agent id -> how
  -- many of its picks are pending (no field when none): AgentStats.pending.
  pending = PREFIX .. 'pending',
  -- sorted set: "<n> <agent id>" -> when the hold of that pending pick ends (unix ms),
  -- n the pick's sequence number; a confirmed pick leaves it, so expiry reads only
  -- the picks it ends.
  pending_due = PREFIX .. 'pending_due',
}

-- sorted set: request id -> n, the open leases of one agent, oldest first (an end
-- without a request id closes the oldest). Redis deletes it with its last member, so
-- EXISTS answers "does this agent hold a lease".
local function agent_leases_key(agent_id)
  return PREFIX .. 'agent_leases:' .. agent_id
end

local function int(x)
  return string.format('%d', x)
end

local function float(x)
  if x == nil then return '-' end
  return string.format('%.17g', x)
end

-- version and config start from the server's clock in microseconds when missing, not
-- from 0: after a Redis restart that lost them they restart above every value handed
-- out before, so a replica that cached "config 41" can never mistake a new registry
-- for the one it cached, and versions only ever grow.
local function seed_counter(key)
  if redis.call('EXISTS', key) == 0 then
    local now = redis.call('TIME')
    redis.call('SET', key, now[1] .. string.format('%06d', tonumber(now[2])))
  end
end

local function bump_version()
  seed_counter(K.version)
  return redis.call('INCR', K.version)
end

local function bump_config()
  seed_counter(K.config)
  return redis.call('INCR', K.config)
end

-- The configuration version, after making sure the strategy is set (the calling
-- replica's default, written only if none is stored: first replica wins).
local function config_version(default_strategy)
  if redis.call('SET', K.strategy, default_strategy, 'NX') then
    bump_config()
  end
  seed_counter(K.config)
  return redis.call('GET', K.config)
end

-- HMGET in chunks: Lua's unpack() cannot spread more than a few thousand values.
local function hmget(key, fields)
  local out = {}
  for first = 1, #fields, 1000 do
    local chunk = {}
    for i = first, math.min(first + 999, #fields) do
      chunk[#chunk + 1] = fields[i]
    end
    local values = redis.call('HMGET', key, unpack(chunk))
    for i = 1, #values do
      out[#out + 1] = values[i]
    end
  end
  return out
end

-- The registry, weights and strategy, for a replica whose cached copy is out of date.
local function config_payload()
  local ids = redis.call('ZRANGE', K.order, 0, -1)
  return {
    redis.call('GET', K.strategy),
    ids,
    hmget(K.agents, ids),
    redis.call('HGETALL', K.weights),
  }
end

-- Load records: one line of space-separated fields, in this order (redis.py
-- _decode_record reads the same): active, avg_latency_ms, last_request_at_ms,
-- total_requests, failed_requests, cost_ms, cost_at_ms, consecutive_failures,
-- ejected_until_ms, times_ejected, joined_ms, seen (last picked, started or ended; for
-- forget_idle), born (see counters), busy_total_ms, activity_at_ms, completions,
-- cap_done, cap_busy_ms, cap_mark_ms, ev (the estimate version: write_estimates
-- increments it, bookkeeping leaves it), slots (capacity.parallel_slots, stamped by
-- put_agent; 1 when unknown), mc (the model-cost figures, lb_service.model_cost: one
-- token only redis.py reads and writes, "-" when none). "-" is a latency not measured
-- yet (None). Fields added later go last, and a record written before them reads them
-- as 0 (mc as "-").
local function decode_stats(raw)
  if not raw then return nil end
  local f = {}
  for part in string.gmatch(raw, '%S+') do
    f[#f + 1] = part
  end
  local function opt(text)
    if text == '-' then return nil end
    return tonumber(text)
  end
  local function num(i)
    return tonumber(f[i] or '0')
  end
  return {
    active = num(1), avg = opt(f[2]), last = num(3), total = num(4), failed = num(5),
    cost = opt(f[6]), cost_at = num(7), consec = num(8), ejected_until = num(9),
    times_ejected = num(10), joined = num(11), seen = num(12), born = num(13),
    busy = num(14), activity_at = num(15), completions = num(16), cap_done = num(17),
    cap_busy = num(18), cap_mark = num(19), ev = num(20), slots = math.max(num(21), 1),
    mc = f[22] or '-',
  }
end

local function encode_stats(s)
  return table.concat({
    int(s.active), float(s.avg), int(s.last), int(s.total), int(s.failed), float(s.cost),
    int(s.cost_at), int(s.consec), int(s.ejected_until), int(s.times_ejected),
    int(s.joined), int(s.seen), int(s.born), float(s.busy), int(s.activity_at),
    int(s.completions), float(s.cap_done), float(s.cap_busy), float(s.cap_mark), int(s.ev),
    int(s.slots), s.mc,
  }, ' ')
end

local function load_stats(agent_id)
  return decode_stats(redis.call('HGET', K.stats, agent_id))
end

-- A zeroed record (AgentStats()), numbered in the order ids are first seen.
local function new_stats()
  return {
    active = 0, avg = nil, last = 0, total = 0, failed = 0, cost = nil, cost_at = 0,
    consec = 0, ejected_until = 0, times_ejected = 0, joined = 0, seen = 0,
    born = redis.call('HINCRBY', K.counters, 'born', 1),
    busy = 0, activity_at = 0, completions = 0, cap_done = 0, cap_busy = 0, cap_mark = 0,
    ev = 0, slots = 1, mc = '-',
  }
end

local function save_stats(agent_id, s)
  redis.call('HSET', K.stats, agent_id, encode_stats(s))
end

-- Bookkeeping, kept atomically with the lease it books. These lines mirror
-- feedback.open_lease and feedback.close_lease (with capacity.accrue) operation for
-- operation; tests/store/test_redis_store.py holds them equal. Nothing else about an
-- agent's figures is computed in Lua.
local function accrue(s, now)
  if s.active > 0 and now > s.activity_at then
    s.busy = s.busy + (now - s.activity_at) * math.min(s.active, s.slots) / s.slots
  end
  s.activity_at = now
end

local function book_open(s, now)
  accrue(s, now)
  s.active = s.active + 1
  s.total = s.total + 1
  s.last = now
end

local function book_close(s, now)
  accrue(s, now)
  s.active = s.active - 1
end

-- Write estimates Python computed (feedback.fold_end, fold_expiry) into record s: the
-- fields string holds redis.py ESTIMATES in order (the model-cost figures as one
-- token, mc), then last_request_at_ms as the record showed it; last_request_at_ms is
-- replaced only if still so (a lease opened since keeps its time, as if it came after
-- this end). Moves the estimate version.
local function apply_estimates(s, fields)
  local e = {}
  for part in string.gmatch(fields, '%S+') do e[#e + 1] = part end
  local function opt(text)
    if text == '-' then return nil end
    return tonumber(text)
  end
  s.avg, s.cost, s.cost_at = opt(e[1]), opt(e[2]), tonumber(e[3])
  s.failed, s.consec = tonumber(e[4]), tonumber(e[5])
  s.ejected_until, s.times_ejected = tonumber(e[6]), tonumber(e[7])
  s.completions, s.cap_done, s.cap_busy, s.cap_mark =
    tonumber(e[8]), tonumber(e[9]), tonumber(e[10]), tonumber(e[11])
  s.mc = e[12]
  if s.last == tonumber(e[14]) then s.last = tonumber(e[13]) end
  s.ev = s.ev + 1
end

-- What Python's fold of an end needs beyond the record: how many agents are ejected
-- at `now`, and how many agents the ejection share is taken of (the registry, or for
-- an id that is not registered every id the store knows, as MemoryStore._observe).
local function ejected_count(now)
  local count = 0
  for _, until_ms in ipairs(redis.call('HVALS', K.ejections)) do
    if tonumber(until_ms) > now then count = count + 1 end
  end
  return count
end

-- Whether the store knows the id: registered, or seen before (a candidate that was
-- picked or started), as MemoryStore._knows.
local function known(agent_id)
  return redis.call('HEXISTS', K.agents, agent_id) == 1
    or redis.call('HEXISTS', K.stats, agent_id) == 1
end

local function population(agent_id)
  if redis.call('HEXISTS', K.agents, agent_id) == 1 then
    return redis.call('HLEN', K.agents)
  end
  return redis.call('HLEN', K.stats)
end

-- A new request id "<epoch>-<n>". The epoch is created here if missing, from a fresh
-- random candidate the replica sends with every call, so ids issued after a restart
-- that lost the keys never repeat earlier ones.
local function issue(epoch_candidate)
  redis.call('SET', K.epoch, epoch_candidate, 'NX')
  local n = redis.call('HINCRBY', K.counters, 'issued', 1)
  return redis.call('GET', K.epoch) .. '-' .. int(n), n
end

-- Open a lease on the agent whose record s is (saved by the caller), for a request
-- asking for model (as redis.py encodes it; "" = none).
local function open_lease(epoch_candidate, agent_id, now, s, model)
  local request_id, n = issue(epoch_candidate)
  local started = int(now)
  if model ~= '' then started = started .. ',' .. model end
  redis.call('HSET', K.leases, request_id, started .. ' ' .. agent_id)
  redis.call('ZADD', K.lease_order, n, request_id)
  redis.call('ZADD', agent_leases_key(agent_id), n, request_id)
  book_open(s, now)
  s.seen = now
  return request_id
end

-- A lease record's start time, agent id and model ("" when none, as in records
-- written before the model was kept).
local function parse_lease(raw)
  local started, model, agent_id = string.match(raw, '^(%-?%d+),?([^ ]*) (.*)$')
  return tonumber(started), agent_id, model
end

-- Remove an open lease (its bookkeeping is the caller's: book_close).
local function remove_lease(request_id, agent_id)
  redis.call('HDEL', K.leases, request_id)
  redis.call('ZREM', K.lease_order, request_id)
  redis.call('ZREM', agent_leases_key(agent_id), request_id)
end

-- MemoryStore._was_issued: the exact text issued ("<epoch>-<n>", n in 1..issued, plain
-- ASCII digits without a leading zero, at most 20 of them), compared as digit strings
-- so no number is ever rounded.
local function was_issued(request_id)
  local epoch = redis.call('GET', K.epoch)
  if not epoch then return false end
  local head, number = string.match(request_id, '^(.*)%-(.*)$')
  if head ~= epoch or #number == 0 or #number > 20 then return false end
  if not string.match(number, '^[1-9][0-9]*$') then return false end
  local issued = redis.call('HGET', K.counters, 'issued') or '0'
  if #number ~= #issued then return #number < #issued end
  for i = 1, #number do
    local a, b = string.byte(number, i), string.byte(issued, i)
    if a ~= b then return a < b end
  end
  return true
end

-- list: the sequence numbers of one agent's pending picks, oldest first (a start
-- confirms the oldest). Redis deletes it with its last member.
local function pending_key(agent_id)
  return PREFIX .. 'pending_picks:' .. agent_id
end

local function count_pending(agent_id, change)
  if redis.call('HINCRBY', K.pending, agent_id, change) <= 0 then
    redis.call('HDEL', K.pending, agent_id)
  end
end

-- Pending picks, the bookkeeping of MemoryStore's PendingPicks: count pick n on the
-- agent until deadline (unix ms), or until a start there confirms it.
local function hold_pick(agent_id, n, deadline)
  redis.call('RPUSH', pending_key(agent_id), int(n))
  redis.call('ZADD', K.pending_due, int(deadline), int(n) .. ' ' .. agent_id)
  count_pending(agent_id, 1)
end

-- A start reported on the agent: its oldest pending pick ends, if it has one.
local function confirm_pick(agent_id)
  local n = redis.call('LPOP', pending_key(agent_id))
  if n then
    redis.call('ZREM', K.pending_due, n .. ' ' .. agent_id)
    count_pending(agent_id, -1)
  end
end

-- End the pending picks whose hold is over at now: only those are read. One whose
-- agent's history was forgotten meanwhile (forget_idle) is no longer in its list.
local function end_pending(now)
  local due = redis.call('ZRANGEBYSCORE', K.pending_due, '-inf', int(now))
  if #due == 0 then return end
  redis.call('ZREMRANGEBYSCORE', K.pending_due, '-inf', int(now))
  for _, member in ipairs(due) do
    local n, agent_id = string.match(member, '^(%d+) (.*)$')
    if redis.call('LREM', pending_key(agent_id), 1, n) == 1 then
      count_pending(agent_id, -1)
    end
  end
end

--- script: config
-- The configuration version, and the configuration itself when it differs from the
-- replica's cached one. ARGV: prefix, cached config version ("" = none), default strategy.
local version = config_version(ARGV[3])
if version == ARGV[2] then return {version, false} end
return {version, config_payload()}

--- script: overview
-- What GetLoads and GetStatistics read, as of one instant. ARGV: prefix, cached config
-- version, default strategy. Returns {config version, configuration or false, every
-- load record (flat id/record pairs), counters (flat), selections (flat), health
-- records (flat id/record pairs), pending picks (flat id/count pairs)}.
local version = config_version(ARGV[3])
local payload = false
if version ~= ARGV[2] then payload = config_payload() end
return {
  version,
  payload,
  redis.call('HGETALL', K.stats),
  redis.call('HGETALL', K.counters),
  redis.call('HGETALL', K.selections),
  redis.call('HGETALL', K.health),
  redis.call('HGETALL', K.pending),
}

--- script: pick_state
-- Everything one selection reads, as of one instant. ARGV: prefix, cached config
-- version, default strategy, session id ("" = none), then the candidate ids.
-- Returns {config version, configuration or false, state version or false, sequence,
-- bindings held, leases open, bound agent or false, binding last used or false,
-- ejections (flat id/until pairs), records of the registered agents in registration
-- order, records of the candidates in the order given, agents out by health (flat
-- id/'unhealthy'|'draining' pairs), pending picks (flat id/count pairs, only the ids
-- that have some)}. Records come as one string, one per line ("" where an id has
-- none): one reply element instead of one per agent keeps the client's parsing from
-- dominating a pick over a large registry.
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
}

--- script: put_agent
-- Add or replace an agent. ARGV: prefix, id, agent JSON, now, parallel slots,
-- max_agents (0 = no limit). A new id while max_agents are registered changes nothing
-- and returns 'max_agents' (store.base.Limit). A new registration gets the next
-- registration number and joined = now (slow start) in its load record; a changed slot
-- count is booked as MemoryStore.put_agent books it (busy time so far at the old
-- count). An unchanged re-registration (dispatchers re-register on every start) leaves
-- the configuration version alone, so no replica reloads its cached registry for it.
-- Returns {'added' | 'changed' | 'unchanged' (store.base.Registered), version}.
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
if s.slots ~= slots then
  accrue(s, now)
  s.slots = slots
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

--- script: delete_agent
-- Remove an agent and its weight override; its load record stays (history survives a
-- re-registration until forget_idle). ARGV: prefix, id. Returns {removed 0/1, version}.
local agent_id = ARGV[2]
if redis.call('HDEL', K.agents, agent_id) == 0 then return {0, false} end
redis.call('ZREM', K.order, agent_id)
redis.call('HDEL', K.weights, agent_id)
redis.call('HDEL', K.health, agent_id)
redis.call('HDEL', K.out, agent_id)
bump_config()
return {1, bump_version()}

--- script: set_weights
-- Apply weight overrides all at once, and answer with the configuration they leave.
-- ARGV: prefix, cached config version, default strategy, only_registered (1/0), then
-- id, weight pairs. With only_registered, an id not registered changes nothing and
-- returns {'unknown-agent', id} (the first such id). No pairs change nothing. Returns
-- {config version, configuration or false, state version or false}: false when the
-- configuration was the cached one before these overrides (the replica applies them to
-- its copy), else the whole configuration.
local cached = ARGV[2]
local before = config_version(ARGV[3])
if ARGV[4] == '1' then
  for i = 5, #ARGV, 2 do
    if redis.call('HEXISTS', K.agents, ARGV[i]) == 0 then return {'unknown-agent', ARGV[i]} end
  end
end
if #ARGV < 5 then
  if before == cached then return {before, false, false} end
  return {before, config_payload(), false}
end
for first = 5, #ARGV, 1000 do
  local chunk = {}
  for i = first, math.min(first + 999, #ARGV) do chunk[#chunk + 1] = ARGV[i] end
  redis.call('HSET', K.weights, unpack(chunk))
end
local after = int(bump_config())
local version = bump_version()
if before == cached then return {after, false, version} end
return {after, config_payload(), version}

--- script: clear_weights
-- Drop the weight overrides of the given ids. ARGV: prefix, then the ids.
for i = 2, #ARGV do redis.call('HDEL', K.weights, ARGV[i]) end
bump_config()
return bump_version()

--- script: set_strategy
-- Switch strategy. ARGV: prefix, new strategy, default strategy (what "none stored"
-- means). Returns {previous strategy, version}.
local previous = redis.call('GET', K.strategy) or ARGV[3]
redis.call('SET', K.strategy, ARGV[2])
bump_config()
return {previous, bump_version()}

--- script: commit_pick
-- Record a selection, re-ranking its contenders on the loads as they are now.
-- ARGV: prefix, epoch candidate, agent id, now, acquire (1/0), session id, bind (1/0),
-- fresh_since_ms, the binding this replica's snapshot showed (agent id, last used; ""
-- when none), max_leases, max_sessions (0 = no limit), the model the lease is for (as
-- open_lease keeps it; "" = none), hold_until_ms (without acquire, the pick is pending
-- on its agent until then: hold_pick; 0 = not at all), then the contenders as (id,
-- max_connections, tier, per_request, offset, floor) sextuples (store.base.Contender;
-- none: commit the agent id as it is). Returns 'max_leases' or 'max_sessions' when the
-- pick would go past that limit, false when every contender is at max_connections or
-- draining (nothing recorded either way), else {agent id, request id or "", sticky
-- 1/0, version}.
local agent_id, now = ARGV[3], tonumber(ARGV[4])
local acquire, session_id, bind = ARGV[5] == '1', ARGV[6], ARGV[7] == '1'
local fresh_since, seen_agent, seen_used = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local max_leases, max_sessions = tonumber(ARGV[11]), tonumber(ARGV[12])
local model = ARGV[13]
local hold_until = tonumber(ARGV[14])
local sticky = 0
local bound = false
if session_id ~= '' then bound = redis.call('HGET', K.bindings, session_id) end

local decided = false
if bind and bound then
  -- A live binding the snapshot did not show was made (or refreshed) by a concurrent
  -- pick: the session binds once, so it wins. One the snapshot showed is the binding
  -- the balancer chose to replace (idle, its agent gone or not fit for this task).
  local used = redis.call('ZSCORE', K.used, session_id)
  local shown = bound == seen_agent and seen_used ~= '' and tonumber(used) == tonumber(seen_used)
  -- A draining agent takes no pick, not even through a binding (DrainAgent's promise).
  if used and tonumber(used) >= fresh_since and not shown
      and redis.call('HGET', K.out, bound) ~= 'draining' then
    agent_id = bound
    sticky = 1
    decided = true
  end
end

if not decided and #ARGV >= 20 then
  -- The one generic comparison (strategies.base.LoadRank, computed by the strategy):
  -- each contender with room ranks (tier, max(floor, per_request * (active + 1) +
  -- offset)) on its requests in flight now (AgentStats.in_flight: open leases and
  -- pending picks, as the decision counted them), compared lexicographically; the
  -- lowest wins and ties take turns by the sequence, ties[sequence % #ties] in the
  -- contenders' order, as strategies.base.rotate_lowest.
  local best1, best2 = nil, nil
  local ties = {}
  for i = 15, #ARGV, 6 do
    local id, limit = ARGV[i], tonumber(ARGV[i + 1])
    local s = load_stats(id)
    local active = 0
    if s then active = s.active + tonumber(redis.call('HGET', K.pending, id) or 0) end
    -- A contender drained after this replica read its snapshot is passed over: once
    -- DrainAgent has returned, no pick commits to the agent.
    if (limit == 0 or active < limit) and redis.call('HGET', K.out, id) ~= 'draining' then
      local r1 = tonumber(ARGV[i + 2])
      local per_request, offset, floor = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
      local r2 = math.max(floor, per_request * (active + 1) + offset)
      if best1 == nil or r1 < best1 or (r1 == best1 and r2 < best2) then
        best1, best2 = r1, r2
        ties = {id}
      elseif r1 == best1 and r2 == best2 then
        ties[#ties + 1] = id
      end
    end
  end
  if #ties == 0 then
    -- Refused: counted as a failed selection here, so the refusal costs no round trip.
    redis.call('HINCRBY', K.counters, 'failed', 1)
    return false
  end
  local sequence = tonumber(redis.call('HGET', K.counters, 'sequence') or 0)
  agent_id = ties[(sequence % #ties) + 1]
end

if not decided and #ARGV < 18 and redis.call('HGET', K.out, agent_id) == 'draining' then
  redis.call('HINCRBY', K.counters, 'failed', 1)
  return false
end

-- The limits, in the same atomic step that would go past them: a lease to open, a
-- session bound for the first time (a rebinding or a concurrent binding adds none).
if acquire and max_leases > 0 and redis.call('HLEN', K.leases) >= max_leases then
  return 'max_leases'
end
if bind and not bound and max_sessions > 0
    and redis.call('HLEN', K.bindings) >= max_sessions then
  return 'max_sessions'
end

-- As MemoryStore.commit_pick: pending picks whose hold is over end once the pick is
-- certain (the re-rank above saw the loads the decision saw).
end_pending(now)
local n = redis.call('HINCRBY', K.counters, 'sequence', 1)
redis.call('HINCRBY', K.counters, 'selections', 1)
redis.call('HINCRBY', K.selections, agent_id, 1)
local s = load_stats(agent_id) or new_stats()
s.seen = now
if session_id ~= '' and (bind or bound == agent_id) then
  -- bind: (re)bind; otherwise only a binding to this same agent is refreshed, and a
  -- binding elsewhere (this pick spilled over from a full agent) is left alone.
  redis.call('HSET', K.bindings, session_id, agent_id)
  redis.call('ZADD', K.used, now, session_id)
end
local request_id = ''
if acquire then
  request_id = open_lease(ARGV[2], agent_id, now, s, model)
elseif hold_until > now then
  hold_pick(agent_id, n, hold_until)
end
save_stats(agent_id, s)
return {agent_id, request_id, sticky, bump_version(), encode_stats(s)}

--- script: open_lease
-- Record a request start. ARGV: prefix, epoch candidate, agent id, now, max_leases (0 =
-- no limit), only_known (1/0), the model the request asks for (as redis.py encodes it;
-- "" = none). Returns 'unknown-agent' with only_known when the id is
-- neither registered nor holds a load record, 'max_leases' when that many leases are
-- open (nothing recorded either way), else {request id, version, the agent's record}.
local agent_id, now = ARGV[3], tonumber(ARGV[4])
local max_leases = tonumber(ARGV[5])
if ARGV[6] == '1' and not known(agent_id) then return 'unknown-agent' end
if max_leases > 0 and redis.call('HLEN', K.leases) >= max_leases then
  return 'max_leases'
end
-- The start confirms the agent's oldest pending pick (after those whose hold is over end).
end_pending(now)
confirm_pick(agent_id)
local s = load_stats(agent_id) or new_stats()
local request_id = open_lease(ARGV[2], agent_id, now, s, ARGV[7])
save_stats(agent_id, s)
return {request_id, bump_version(), encode_stats(s)}

--- script: end_request
-- The first step of recording a request end: check it, close its lease (bookkeeping)
-- and count its latency, atomically, so a lease ends once. The estimates are Python's
-- (feedback.fold_end), written back by write_estimates. ARGV: prefix, request id (""
-- = the agent's oldest lease), agent id ("" = the lease's), latency_ms, now, only_known
-- (1/0: without a request id, an agent neither registered nor holding a load record is
-- "unknown-agent"). Returns {outcome, lease's agent id, version or false, then for
-- "closed" and "no-open-lease" (the only outcomes that change anything): the agent id,
-- the record, ejected_count, population, 'written' or false, and the request id and
-- model of the lease closed ("" when none; the model as open_lease keeps it)};
-- outcomes as EndOutcome's values.
-- The end's estimates in the same step, when the replica guessed them right: ARGV[7..]
-- are the estimate version and booked busy_total_ms the replica folded from, the
-- ejected_count and population it folded with, whether it expected a lease to close
-- (1/0), the estimate fields (as write_estimates), the ejected_until_ms to record
-- ("" = none) and the model of the lease it expected to close ("" = none), or ARGV[7] =
-- "" for no guess. Those are every input of Python's fold (feedback.fold_end reads the
-- estimates, which only write_estimates changes, of the bookkeeping only busy_total_ms,
-- and the lease's model); with last_request_at_ms also as the replica saw it (the
-- fields' last value), the figures are the ones the second step would write: they are
-- written now, and the record returned is the record as written ('written').
-- Otherwise the record returned is as booked (false), for the second step.
local request_id, agent_id = ARGV[2], ARGV[3]
local latency, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local model = ''
if request_id ~= '' then
  local raw = redis.call('HGET', K.leases, request_id)
  if not raw then
    if was_issued(request_id) then return {'already-ended', '', false} end
    return {'unknown-request', '', false}
  end
  local _, owner, leased = parse_lease(raw)
  if agent_id ~= '' and agent_id ~= owner then return {'wrong-agent', owner, false} end
  agent_id, model = owner, leased
else
  if ARGV[6] == '1' and not known(agent_id) then return {'unknown-agent', '', false} end
  local oldest = redis.call('ZRANGE', agent_leases_key(agent_id), 0, 0)
  request_id = oldest[1] or ''
  local raw = request_id ~= '' and redis.call('HGET', K.leases, request_id)
  if raw then
    local _, _, leased = parse_lease(raw)
    model = leased
  end
end
-- Counted before a new record is added, as the memory store counts.
local share_of = population(agent_id)
local s = load_stats(agent_id) or new_stats()
if request_id ~= '' then
  remove_lease(request_id, agent_id)
  book_close(s, now)
end
s.seen = now
local ejected = ejected_count(now)
local written = false
if ARGV[7] ~= '' and tonumber(ARGV[7]) == s.ev and tonumber(ARGV[8]) == s.busy
    and tonumber(ARGV[9]) == ejected and tonumber(ARGV[10]) == share_of
    and (ARGV[11] == '1') == (request_id ~= '') and ARGV[14] == model
    and tonumber(string.match(ARGV[12], '(%S+)$')) == s.last then
  apply_estimates(s, ARGV[12])
  if ARGV[13] ~= '' then redis.call('HSET', K.ejections, agent_id, ARGV[13]) end
  written = 'written'
end
save_stats(agent_id, s)
local sum = tonumber(redis.call('HGET', K.counters, 'latency_sum') or 0) + latency
redis.call('HSET', K.counters, 'latency_sum', float(sum))
redis.call('HINCRBY', K.counters, 'samples', 1)
local outcome = 'no-open-lease'
if request_id ~= '' then outcome = 'closed' end
return {
  outcome, '', bump_version(), agent_id, encode_stats(s), ejected, share_of, written,
  request_id, model,
}

--- script: expire_leases
-- The first step of expiring leases: close every lease started before the cutoff, in
-- start order, stopping at the first later one (bookkeeping only). Atomic, so
-- replicas sweeping at once close each lease once. The estimates are Python's
-- (feedback.fold_expiry), written back by write_estimates. ARGV: prefix, cutoff, now.
-- Returns {version or false, then request id, agent id, started_at, model (as open_lease
-- keeps it) and the agent's record as booked right after closing it, per lease}.
local cutoff, now = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Pending picks whose hold is over end too (the version stays, as in memory).
end_pending(now)
local out = {false}
local done = false
while not done do
  local batch = redis.call('ZRANGE', K.lease_order, 0, 99)
  if #batch == 0 then break end
  for _, request_id in ipairs(batch) do
    local raw = redis.call('HGET', K.leases, request_id)
    if not raw then
      redis.call('ZREM', K.lease_order, request_id) -- cannot happen; never loop on it
    else
      local started, agent_id, model = parse_lease(raw)
      if started >= cutoff then
        done = true
        break
      end
      remove_lease(request_id, agent_id)
      local s = load_stats(agent_id) or new_stats()
      book_close(s, now)
      save_stats(agent_id, s)
      out[#out + 1] = request_id
      out[#out + 1] = agent_id
      out[#out + 1] = started
      out[#out + 1] = model
      out[#out + 1] = encode_stats(s)
    end
  end
end
if #out > 1 then out[1] = bump_version() end
return out

--- script: write_estimates
-- The second step of an end or an expiry: write the estimates Python computed from a
-- record (feedback.fold_end, fold_expiry), if no other estimate was written to it
-- since (compare-and-set on its estimate version ev; bookkeeping does not move ev, and
-- is kept as it is now). last_request_at_ms, which a lease opening sets too, is
-- written only if it is still as the record showed: a lease opened since keeps its
-- time, as if it came after this end. ARGV: prefix, now, then per record five values:
-- agent id, the ev the estimates were computed at, the estimate fields (one string, in
-- redis.py ESTIMATES order, then last_request_at_ms as the record showed it), the
-- ejected_until_ms to record in the ejections hash ("" = none: the write
-- ejects nobody), and the ejected_count the fold was computed with, checked when it
-- ejects, so concurrent folds through several replicas never eject more than the
-- share allows ("" = not checked).
-- Returns {version or false, then per record: "written", "gone" (the record was
-- forgotten meanwhile: nothing written) or "conflict", then for a conflict the record
-- as it is now, ejected_count, population (else "", 0, 0)}.
local now = tonumber(ARGV[2])
local out = {false}
local wrote = false
for i = 3, #ARGV, 5 do
  local agent_id, ev, fields = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local eject_until, ejected_seen = ARGV[i + 3], ARGV[i + 4]
  local s = load_stats(agent_id)
  local ejected_now = 0
  if s and eject_until ~= '' then ejected_now = ejected_count(now) end
  if not s then
    out[#out + 1] = 'gone'
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = 0
  elseif s.ev ~= ev or (eject_until ~= '' and ejected_seen ~= '' and ejected_now ~= tonumber(ejected_seen)) then
    out[#out + 1] = 'conflict'
    out[#out + 1] = encode_stats(s)
    out[#out + 1] = ejected_count(now)
    out[#out + 1] = population(agent_id)
  else
    apply_estimates(s, fields)
    save_stats(agent_id, s)
    if eject_until ~= '' then redis.call('HSET', K.ejections, agent_id, eject_until) end
    wrote = true
    out[#out + 1] = 'written'
    out[#out + 1] = ''
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
if wrote then out[1] = bump_version() end
return out

--- script: expire_ejections
-- Bring back agents whose ejection is over. ARGV: prefix, now.
-- Returns {version or false, then agent id, ejected until per agent}.
local now = tonumber(ARGV[2])
local out = {false}
local ejections = redis.call('HGETALL', K.ejections)
for i = 1, #ejections, 2 do
  if tonumber(ejections[i + 1]) <= now then
    redis.call('HDEL', K.ejections, ejections[i])
    out[#out + 1] = ejections[i]
    out[#out + 1] = ejections[i + 1]
  end
end
if #out > 1 then out[1] = bump_version() end
return out

--- script: expire_sessions
-- Drop bindings last used before the cutoff (the state version stays, as in memory).
-- ARGV: prefix, cutoff. Returns how many went.
local stale = redis.call('ZRANGEBYSCORE', K.used, '-inf', '(' .. ARGV[2])
for _, session_id in ipairs(stale) do
  redis.call('HDEL', K.bindings, session_id)
  redis.call('ZREM', K.used, session_id)
end
return #stale

--- script: forget_idle
-- Forget the load records of ids neither registered nor holding a lease that went
-- unused since the cutoff, or beyond the `keep` most recently used (ties: first seen
-- first, the memory store's order); their selections move to "". ARGV: prefix,
-- cutoff, keep. Returns {how many went, version or false}.
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

--- script: put_health
-- Replace an agent's health record, compare-and-set. ARGV: prefix, agent id, the new
-- record, the record expected now ("" = none), the agent's out value ("" = healthy,
-- else 'unhealthy' | 'draining'). Returns 'unknown-agent' when the agent is not
-- registered, 'conflict' when the record is not the one expected (nothing changed
-- either way), else {'applied', version}.
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
