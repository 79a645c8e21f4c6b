-- Request ids and leases: issuing, opening, reading and removing them.
--- uses: keys, bookkeeping

-- Whether the store knows the id: registered, or seen before (a candidate that was
-- picked or started), as MemoryStore._knows.
local function known(agent_id)
  return redis.call('HEXISTS', K.agents, agent_id) == 1
    or redis.call('HEXISTS', K.stats, agent_id) == 1
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
-- asking for model (as records.py quote_model encodes it; "" = none). Returns the
-- request id and the lesson the lease keeps: the model, or '*' (records.NO_LESSON)
-- when every slot is taken, so its end teaches no model cost (model_cost.lesson, the
-- same comparison; tests/store/test_redis_store.py holds them equal).
local function open_lease(epoch_candidate, agent_id, now, s, model)
  local request_id, n = issue(epoch_candidate)
  if s.active >= s.slots then model = '*' end
  local started = int(now)
  if model ~= '' then started = started .. ',' .. model end
  redis.call('HSET', K.leases, request_id, started .. ' ' .. agent_id)
  redis.call('ZADD', K.lease_order, n, request_id)
  redis.call('ZADD', agent_leases_key(agent_id), n, request_id)
  book_open(s, now)
  s.seen = now
  return request_id, model
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
