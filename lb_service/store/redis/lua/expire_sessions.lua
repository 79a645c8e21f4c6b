-- Drop bindings last used before the cutoff (the state version stays, as in memory).
-- ARGV: prefix, cutoff. Returns how many went.
--- uses: keys
local stale = redis.call('ZRANGEBYSCORE', K.used, '-inf', '(' .. ARGV[2])
for _, session_id in ipairs(stale) do
  redis.call('HDEL', K.bindings, session_id)
  redis.call('ZREM', K.used, session_id)
end
return #stale
