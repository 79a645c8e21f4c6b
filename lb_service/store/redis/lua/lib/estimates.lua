-- Estimates Python computed, and what Python's fold of them reads beyond a record.
--- uses: keys

-- Write estimates Python computed (feedback.fold_end, fold_expiry) into record s: the
-- fields string holds records.py ESTIMATES in order (the slot evidence and the
-- model-cost figures as one token each, ot and mc), then last_request_at_ms as the
-- record showed it; last_request_at_ms is replaced only if still so (a lease opened
-- since keeps its time, as if it came after this end), and slots only while they are
-- learned (a declaration stands). Moves the estimate version.
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
  if s.learn == 1 then s.slots = tonumber(e[12]) end
  s.ot, s.mc = e[13], e[14]
  if s.last == tonumber(e[16]) then s.last = tonumber(e[15]) end
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

local function population(agent_id)
  if redis.call('HEXISTS', K.agents, agent_id) == 1 then
    return redis.call('HLEN', K.agents)
  end
  return redis.call('HLEN', K.stats)
end
