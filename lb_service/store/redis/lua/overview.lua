-- What GetLoads and GetStatistics read, as of one instant. ARGV: prefix, cached config
-- version, default strategy. Returns {config version, configuration or false, every
-- load record (flat id/record pairs), counters (flat), selections (flat), health
-- records (flat id/record pairs), pending picks (flat id/count pairs), load reports
-- (flat id/report pairs)}.
--- uses: keys, config
local version = config_version(ARGV[3])
local payload = false
if version ~= ARGV[2] then payload = config_payload() end
return {
  version,
  payload,
  redis.call('HGETALL', K.stats),
  redis.call('HGETALL', K.counters),
  redis.call('HGETALL', K.selections),
  redis.call('HGETALL', K.health),
  redis.call('HGETALL', K.pending),
  redis.call('HGETALL', K.reports),
}
