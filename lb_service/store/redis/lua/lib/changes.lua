-- Which load records changed, and when: what lets a pick read only those.
--- uses: keys, versions

-- Number a change to an agent's load record or pending count (K.changes) and note it
-- as the agent's latest (K.changed), so pick_state can return only the records that
-- changed since the replica's last read. The counter starts from the server clock like
-- the versions (seed_counter), so after a Redis restart it restarts above every number
-- handed out before and a replica's "changed since" never hides a new change.
local function mark_changed(agent_id)
  seed_counter(K.changes)
  redis.call('ZADD', K.changed, redis.call('INCR', K.changes), agent_id)
end
