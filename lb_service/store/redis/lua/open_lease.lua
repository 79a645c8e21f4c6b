-- Record a request start. ARGV: prefix, epoch candidate, agent id, now, max_leases (0 =
-- no limit), only_known (1/0), the model the request asks for (as records.py
-- quote_model encodes it; "" = none). Returns 'unknown-agent' with only_known when the
-- id is neither registered nor holds a load record, 'max_leases' when that many leases are
-- open (nothing recorded either way), else {request id, version, the agent's record,
-- the lesson the lease keeps (its model, or '*' if it opened behind full slots)}.
--- uses: keys, versions, records, leases, pending
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
local request_id, lesson = open_lease(ARGV[2], agent_id, now, s, ARGV[7])
save_stats(agent_id, s)
return {request_id, bump_version(), encode_stats(s), lesson}
