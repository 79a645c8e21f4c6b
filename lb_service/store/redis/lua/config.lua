-- The configuration version, and the configuration itself when it differs from the
-- replica's cached one. ARGV: prefix, cached config version ("" = none), default strategy.
--- uses: config
local version = config_version(ARGV[3])
if version == ARGV[2] then return {version, false} end
return {version, config_payload()}
