-- Deletes a job's rows. KEYS: meta, rows, data, ends, keyset. ARGV: key-zset prefix, 'keep' (a replay: leave an
-- empty marker, so the next write does not look like lost data) or 'forget', retention ms, ttl ms.
local meta, rows, data, ends, keyset = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
for _, ek in ipairs(redis.call('ZRANGE', keyset, 0, -1)) do redis.call('UNLINK', ARGV[1] .. ek) end
redis.call('UNLINK', meta, rows, data, ends, keyset)
if ARGV[2] == 'keep' then
  redis.call('HSET', meta, 'retention', ARGV[3])
  redis.call('PEXPIRE', meta, ARGV[4])
end
return 0
