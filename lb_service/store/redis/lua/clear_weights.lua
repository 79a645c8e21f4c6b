-- Drop the weight overrides of the given ids. ARGV: prefix, then the ids.
--- uses: keys, versions
for i = 2, #ARGV do redis.call('HDEL', K.weights, ARGV[i]) end
bump_config()
return bump_version()
