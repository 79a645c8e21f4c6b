-- The registry, weights and strategy, for replicas that cache them by version.
--- uses: keys, versions

-- The configuration version, after making sure the strategy is set (the calling
-- replica's default, written only if none is stored: first replica wins).
local function config_version(default_strategy)
  if redis.call('SET', K.strategy, default_strategy, 'NX') then
    bump_config()
  end
  seed_counter(K.config)
  return redis.call('GET', K.config)
end

-- HMGET in chunks: Lua's unpack() cannot spread more than a few thousand values.
local function hmget(key, fields)
  local out = {}
  for first = 1, #fields, 1000 do
    local chunk = {}
    for i = first, math.min(first + 999, #fields) do
      chunk[#chunk + 1] = fields[i]
    end
    local values = redis.call('HMGET', key, unpack(chunk))
    for i = 1, #values do
      out[#out + 1] = values[i]
    end
  end
  return out
end

-- The registry, weights and strategy, for a replica whose cached copy is out of date.
local function config_payload()
  local ids = redis.call('ZRANGE', K.order, 0, -1)
  return {
    redis.call('GET', K.strategy),
    ids,
    hmget(K.agents, ids),
    redis.call('HGETALL', K.weights),
  }
end
