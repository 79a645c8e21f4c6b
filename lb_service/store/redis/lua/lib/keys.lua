-- The keys of one prefix and how numbers are written into them (see README.md).

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
  -- the model its request asked for (percent-encoded by records.py, so it holds no space
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
  -- hash: agent id -> "<received at ms> <leases open then> <report as JSON>": each
  -- registered agent's freshest load report (lb_service.reports; records.py
  -- decode_report), written by put_report, dropped with the agent.
  reports = PREFIX .. 'reports',
  -- string: when the newest report arrived (unix ms), so a pick can tell at once that
  -- none is fresh.
  reports_newest = PREFIX .. 'reports_newest',
  -- Pending picks (lb_service.store.pending; see lib/pending.lua). hash: agent id -> how
  -- many of its picks are pending (no field when none): AgentStats.pending.
  pending = PREFIX .. 'pending',
  -- sorted set: "<n> <agent id>" -> when the hold of that pending pick ends (unix ms),
  -- n the pick's sequence number; a confirmed pick leaves it, so expiry reads only
  -- the picks it ends.
  pending_due = PREFIX .. 'pending_due',
  -- string: the change counter (lib/changes.lua): INCR'd with every change to a load
  -- record or a pending count (see seed_counter for its start).
  changes = PREFIX .. 'changes',
  -- sorted set: agent id -> the change counter at its load record's (or pending
  -- count's) latest change, so a pick reads only the records changed since its last.
  changed = PREFIX .. 'changed',
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

-- list: the sequence numbers of one agent's pending picks, oldest first (a start
-- confirms the oldest). Redis deletes it with its last member.
local function pending_key(agent_id)
  return PREFIX .. 'pending_picks:' .. agent_id
end
