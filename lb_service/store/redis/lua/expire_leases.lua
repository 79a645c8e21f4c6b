-- The first step of expiring leases: close every lease started before the cutoff, in
-- start order, stopping at the first later one (bookkeeping only). Atomic, so
-- replicas sweeping at once close each lease once. The estimates are Python's
-- (feedback.fold_expiry), written back by write_estimates. ARGV: prefix, cutoff, now.
-- Returns {version or false, then request id, agent id, started_at, model (as open_lease
-- keeps it) and the agent's record as booked right after closing it, per lease}.
--- uses: keys, versions, records, bookkeeping, leases, pending
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
