-- Per key, the row of its newest window (largest start, then largest end), of one key or of every key in key
-- order. KEYS: meta, data, keyset. ARGV: key-zset prefix, '=' and the encoded key or '' for all.
-- Returns {newest end, retention, watermark, row json...}.
local meta, data, keyset = KEYS[1], KEYS[2], KEYS[3]
local m = redis.call('HMGET', meta, 'newest_end', 'retention', 'watermark')
local out = {m[1] or '', m[2] or '', m[3] or ''}
local keys = ARGV[2] == '' and redis.call('ZRANGE', keyset, 0, -1) or {string.sub(ARGV[2], 2)}
for _, ek in ipairs(keys) do
  local newest = redis.call('ZREVRANGEBYSCORE', ARGV[1] .. ek, '+inf', '-inf', 'LIMIT', 0, 1)
  if newest[1] then
    local v = redis.call('HGET', data, newest[1])
    if v then out[#out + 1] = v end
  end
end
return out
