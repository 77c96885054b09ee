-- One write of a job's hot results, atomic. KEYS: meta, rows, data, ends, keyset.
-- ARGV: key-zset prefix, retention ms, ttl ms, mode ('w' replaces, 'f' keeps present rows), watermark or '',
-- number of removals, then (member, encoded key) per removal, then (start, end, member, encoded key, json) per
-- upsert. Returns {meta was missing (0/1), rows held, more to evict (0/1)}.
local meta, rows, data, ends, keyset = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kp, retention, ttl, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local missing = redis.call('EXISTS', meta) == 0 and 1 or 0
redis.call('HSET', meta, 'retention', ARGV[2])
if ARGV[5] ~= '' then
  local old = tonumber(redis.call('HGET', meta, 'watermark'))
  if not old or tonumber(ARGV[5]) > old then redis.call('HSET', meta, 'watermark', ARGV[5]) end
end

local touched = {}
local function drop(member)
  local cut = string.find(member, '\0', 1, true)
  local ek = string.sub(member, 1, cut - 1)
  if redis.call('ZREM', rows, member) == 1 then
    redis.call('HDEL', data, member)
    redis.call('ZREM', ends, member)
    local kz = kp .. ek
    redis.call('ZREM', kz, member)
    if redis.call('ZCARD', kz) == 0 then
      redis.call('DEL', kz)
      redis.call('ZREM', keyset, ek)
      touched[kz] = nil
    end
  end
end

local i = 7
for _ = 1, tonumber(ARGV[6]) do
  drop(ARGV[i])
  i = i + 2
end

-- The newest window end moves first, so rows of this batch already past retention are not kept.
local newest_text = redis.call('HGET', meta, 'newest_end')
local newest = tonumber(newest_text)
for j = i + 1, #ARGV, 5 do
  local e = tonumber(ARGV[j])
  if not newest or e > newest then newest, newest_text = e, ARGV[j] end
end
if newest_text then redis.call('HSET', meta, 'newest_end', newest_text) end

local longest = tonumber(redis.call('HGET', meta, 'longest')) or 0
while i <= #ARGV do
  local s, e, member, ek, json = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if e > newest - retention then
    local present = redis.call('HEXISTS', data, member) == 1
    if not present or mode == 'w' then
      redis.call('HSET', data, member, json)
    end
    if not present then
      redis.call('ZADD', rows, s, member)
      redis.call('ZADD', ends, e, member)
      redis.call('ZADD', kp .. ek, s, member)
      redis.call('ZADD', keyset, 0, ek)
      if e - s > longest then longest = e - s end
    end
    touched[kp .. ek] = true
  end
end
redis.call('HSET', meta, 'longest', string.format('%.0f', longest))

-- Evict in bounded steps, so one script never blocks Redis for long; the caller repeats while `more`.
local more = 0
if newest then
  local old = redis.call('ZRANGEBYSCORE', ends, '-inf', newest - retention, 'LIMIT', 0, 2000)
  for _, member in ipairs(old) do drop(member) end
  if #old == 2000 then more = 1 end
end

for _, k in ipairs({meta, rows, data, ends, keyset}) do redis.call('PEXPIRE', k, ttl) end
for kz in pairs(touched) do redis.call('PEXPIRE', kz, ttl) end
return {missing, redis.call('ZCARD', rows), more}
