-- Apply weight overrides all at once, and answer with the configuration they leave.
-- ARGV: prefix, cached config version, default strategy, only_registered (1/0), then
-- id, weight pairs. With only_registered, an id not registered changes nothing and
-- returns {'unknown-agent', id} (the first such id). No pairs change nothing. Returns
-- {config version, configuration or false, state version or false}: false when the
-- configuration was the cached one before these overrides (the replica applies them to
-- its copy), else the whole configuration.
--- uses: keys, versions, config
local cached = ARGV[2]
local before = config_version(ARGV[3])
if ARGV[4] == '1' then
  for i = 5, #ARGV, 2 do
    if redis.call('HEXISTS', K.agents, ARGV[i]) == 0 then return {'unknown-agent', ARGV[i]} end
  end
end
if #ARGV < 5 then
  if before == cached then return {before, false, false} end
  return {before, config_payload(), false}
end
for first = 5, #ARGV, 1000 do
  local chunk = {}
  for i = first, math.min(first + 999, #ARGV) do chunk[#chunk + 1] = ARGV[i] end
  redis.call('HSET', K.weights, unpack(chunk))
end
local after = int(bump_config())
local version = bump_version()
if before == cached then return {after, false, version} end
return {after, config_payload(), version}
