-- Renews the TTL of up to 1000 per-key sets from `offset` (per-key sets of keys not written lately would otherwise
-- expire before the job's other keys). KEYS: keyset. ARGV: key-zset prefix, offset, ttl ms.
-- Returns the next offset, 0 at the end.
local page = redis.call('ZRANGE', KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[2]) + 999)
for _, ek in ipairs(page) do redis.call('PEXPIRE', ARGV[1] .. ek, ARGV[3]) end
if #page < 1000 then return 0 end
return tonumber(ARGV[2]) + #page
