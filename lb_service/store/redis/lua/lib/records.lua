-- Load records: one agent's figures as one line of text.
--- uses: keys, changes

-- Load records: one line of space-separated fields, in this order (records.py
-- decode_record reads the same): active, avg_latency_ms, last_request_at_ms,
-- total_requests, failed_requests, cost_ms, cost_at_ms, consecutive_failures,
-- ejected_until_ms, times_ejected, joined_ms, seen (last picked, started or ended; for
-- forget_idle), born (see counters), busy_total_ms, activity_at_ms, completions,
-- cap_done, cap_busy_ms, cap_mark_ms, ev (the estimate version: write_estimates
-- increments it, bookkeeping leaves it), slots (capacity.parallel_slots, stamped by
-- put_agent; 1 when unknown), mc (the model-cost figures, lb_service.model_cost: one
-- token only records.py reads and writes, "-" when none), learn (1 while slots are
-- learned, 0 while declared), ot (the slot evidence, capacity.completed: one token only
-- records.py reads and writes, "-" when none). "-" is a latency not measured yet
-- (None). Fields added later go last, and a record written before them reads them as
-- 0 (mc and ot as "-", learn as 1).
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
    mc = f[22] or '-', learn = tonumber(f[23] or '1'), ot = f[24] or '-',
  }
end

local function encode_stats(s)
  return table.concat({
    int(s.active), float(s.avg), int(s.last), int(s.total), int(s.failed), float(s.cost),
    int(s.cost_at), int(s.consec), int(s.ejected_until), int(s.times_ejected),
    int(s.joined), int(s.seen), int(s.born), float(s.busy), int(s.activity_at),
    int(s.completions), float(s.cap_done), float(s.cap_busy), float(s.cap_mark), int(s.ev),
    int(s.slots), s.mc, int(s.learn), s.ot,
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
    ev = 0, slots = 1, mc = '-', learn = 1, ot = '-',
  }
end

local function save_stats(agent_id, s)
  redis.call('HSET', K.stats, agent_id, encode_stats(s))
  mark_changed(agent_id)
end
