-- The first step of recording a request end: check it, close its lease (bookkeeping)
-- and count its latency, atomically, so a lease ends once. The estimates are Python's
-- (feedback.fold_end), written back by write_estimates. ARGV: prefix, request id (""
-- = the agent's oldest lease), agent id ("" = the lease's), latency_ms, now, only_known
-- (1/0: without a request id, an agent neither registered nor holding a load record is
-- "unknown-agent"). Returns {outcome, lease's agent id, version or false, then for
-- "closed" and "no-open-lease" (the only outcomes that change anything): the agent id,
-- the record, ejected_count, population, 'written' or false, the request id and model
-- of the lease closed ("" when none; the model as open_lease keeps it), and how many
-- leases opened before it on the agent were still open (capacity.completed)};
-- outcomes as EndOutcome's values.
-- The end's estimates in the same step, when the replica guessed them right: ARGV[7..]
-- are the estimate version and booked busy_total_ms the replica folded from, the
-- ejected_count and population it folded with, whether it expected a lease to close
-- (1/0), the estimate fields (as write_estimates), the ejected_until_ms to record
-- ("" = none), the model of the lease it expected to close ("" = none) and how many
-- older leases it expected open, or ARGV[7] = "" for no guess. Those are every input of Python's fold (feedback.fold_end reads the
-- estimates, which only write_estimates changes, of the bookkeeping only busy_total_ms,
-- and the lease's model); with last_request_at_ms also as the replica saw it (the
-- fields' last value), the figures are the ones the second step would write: they are
-- written now, and the record returned is the record as written ('written').
-- Otherwise the record returned is as booked (false), for the second step.
--- uses: keys, versions, records, bookkeeping, leases, estimates
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
-- The agent's leases are ranked in the order they opened: older ones still open.
local overtook = 0
if request_id ~= '' then
  overtook = redis.call('ZRANK', agent_leases_key(agent_id), request_id) or 0
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
    and tonumber(ARGV[15]) == overtook
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
  request_id, model, overtook,
}
