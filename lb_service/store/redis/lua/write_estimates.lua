-- The second step of an end or an expiry: write the estimates Python computed from a
-- record (feedback.fold_end, fold_expiry), if no other estimate was written to it
-- since (compare-and-set on its estimate version ev; bookkeeping does not move ev, and
-- is kept as it is now). last_request_at_ms, which a lease opening sets too, is
-- written only if it is still as the record showed: a lease opened since keeps its
-- time, as if it came after this end. ARGV: prefix, now, then per record five values:
-- agent id, the ev the estimates were computed at, the estimate fields (one string, in
-- records.py ESTIMATES order, then last_request_at_ms as the record showed it), the
-- ejected_until_ms to record in the ejections hash ("" = none: the write
-- ejects nobody), and the ejected_count the fold was computed with, checked when it
-- ejects, so concurrent folds through several replicas never eject more than the
-- share allows ("" = not checked).
-- Returns {version or false, then per record: "written", "gone" (the record was
-- forgotten meanwhile: nothing written) or "conflict", then for a conflict the record
-- as it is now, ejected_count, population (else "", 0, 0)}.
--- uses: keys, versions, records, estimates
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
