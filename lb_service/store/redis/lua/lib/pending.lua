-- Pending picks: a pick counted on its agent until a start confirms it or its hold ends.
--- uses: keys, changes

local function count_pending(agent_id, change)
  if redis.call('HINCRBY', K.pending, agent_id, change) <= 0 then
    redis.call('HDEL', K.pending, agent_id)
  end
  mark_changed(agent_id)
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
