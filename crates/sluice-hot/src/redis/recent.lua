-- Rows of windows intersecting [from, to) that end after the eviction cutoff, in (start, key, end) order.
-- KEYS: meta, rows, data. ARGV: key-zset prefix, '=' and the encoded key or '' for all, from or '', to or '', limit.
-- Returns {newest end, retention, watermark, row json...} ('' where absent).
local meta, rows, data = KEYS[1], KEYS[2], KEYS[3]
local m = redis.call('HMGET', meta, 'newest_end', 'retention', 'watermark', 'longest')
local head = {m[1] or '', m[2] or '', m[3] or ''}
if not m[1] then return head end
local from = tonumber(ARGV[3])
local cutoff = tonumber(m[1]) - tonumber(m[2])
if not from or cutoff > from then from = cutoff end
local to = tonumber(ARGV[4])
if to and from >= to then return head end
local limit = tonumber(ARGV[5])
local src = ARGV[2] == '' and rows or (ARGV[1] .. string.sub(ARGV[2], 2))
-- A window ending after `from` starts after `from - longest`.
local low = from - (tonumber(m[4]) or 0) + 1
local high = to and ('(' .. ARGV[4]) or '+inf'
local members, offset = {}, 0
while #members < limit do
  local page = redis.call('ZRANGEBYSCORE', src, string.format('%.0f', low), high, 'LIMIT', offset, 256)
  for _, member in ipairs(page) do
    local cut = string.find(member, '\0', 1, true)
    if tonumber(string.sub(member, cut + 34)) > from and #members < limit then
      members[#members + 1] = member
    end
  end
  if #page < 256 then break end
  offset = offset + #page
end
if #members > 0 then
  local values = redis.call('HMGET', data, unpack(members))
  for _, v in ipairs(values) do
    if v then head[#head + 1] = v end
  end
end
return head
