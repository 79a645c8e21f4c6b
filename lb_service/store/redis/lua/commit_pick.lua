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
-- 1/0, version, the agent's record, the lease's lesson ("" without acquire; see
-- open_lease)}.
--- uses: keys, versions, records, leases, pending
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
  -- pending picks, as the decision counted them), compared lexicographically. The
  -- decision's choice (the pick's agent id) stands while it is among the lowest, so a
  -- commit nothing raced commits what was decided, however many tie with it;
  -- otherwise the lowest wins and ties take turns by the sequence, ties[sequence %
  -- #ties] in the contenders' order, as strategies.base.rotate_lowest.
  local best1, best2 = nil, nil
  local ties = {}
  local chosen1, chosen2 = nil, nil
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
      if id == agent_id then chosen1, chosen2 = r1, r2 end
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
  -- The decision's own choice stands while it is still among the lowest.
  if chosen1 ~= best1 or chosen2 ~= best2 then
    local sequence = tonumber(redis.call('HGET', K.counters, 'sequence') or 0)
    agent_id = ties[(sequence % #ties) + 1]
  end
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
local request_id, lesson = '', ''
if acquire then
  request_id, lesson = open_lease(ARGV[2], agent_id, now, s, model)
elseif hold_until > now then
  hold_pick(agent_id, n, hold_until)
end
save_stats(agent_id, s)
return {agent_id, request_id, sticky, bump_version(), encode_stats(s), lesson}
