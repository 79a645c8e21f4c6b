-- The state and configuration versions every change moves.
--- uses: keys

-- version and config start from the server's clock in microseconds when missing, not
-- from 0: after a Redis restart that lost them they restart above every value handed
-- out before, so a replica that cached "config 41" can never mistake a new registry
-- for the one it cached, and versions only ever grow.
local function seed_counter(key)
  if redis.call('EXISTS', key) == 0 then
    local now = redis.call('TIME')
    redis.call('SET', key, now[1] .. string.format('%06d', tonumber(now[2])))
  end
end

local function bump_version()
  seed_counter(K.version)
  return redis.call('INCR', K.version)
end

local function bump_config()
  seed_counter(K.config)
  return redis.call('INCR', K.config)
end
