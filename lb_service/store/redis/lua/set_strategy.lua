-- Switch strategy. ARGV: prefix, new strategy, default strategy (what "none stored"
-- means). Returns {previous strategy, version}.
--- uses: keys, versions
local previous = redis.call('GET', K.strategy) or ARGV[3]
redis.call('SET', K.strategy, ARGV[2])
bump_config()
return {previous, bump_version()}
