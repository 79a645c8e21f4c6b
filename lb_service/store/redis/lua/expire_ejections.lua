-- Bring back agents whose ejection is over. ARGV: prefix, now.
-- Returns {version or false, then agent id, ejected until per agent}.
--- uses: keys, versions
local now = tonumber(ARGV[2])
local out = {false}
local ejections = redis.call('HGETALL', K.ejections)
for i = 1, #ejections, 2 do
  if tonumber(ejections[i + 1]) <= now then
    redis.call('HDEL', K.ejections, ejections[i])
    out[#out + 1] = ejections[i]
    out[#out + 1] = ejections[i + 1]
  end
end
if #out > 1 then out[1] = bump_version() end
return out
