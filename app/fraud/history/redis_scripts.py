"""The Redis store's server-side scripts (Lua). A script runs atomically and is one round
trip: a whole batch is checked, recorded and given its windows at once, and two replicas
recording payments of one card at the same moment cannot interleave.

Layout, under a prefix P:
- `P tx:<id>`: a hash per payment: `p` its content (for retries), `c` and `k` its card and
  terminal, `m` its member head, `t` its time, `a` its amount, `f` its label ("", "0", "1"),
  `r` the answer it got.
- `P c:<card>` and `P k:<terminal>`: sorted sets of payments scored by event time (in
  microseconds, exact in a double). A member is `head NUL value`, where the head is the
  payment's id in a form that sorts bytewise as the benchmark orders ties, then NUL and the
  id's JSON text; the value is the amount (cards) or the label, 0 or 1 (terminals).
- `P time`: every payment's id by time, for pruning; `P newest`: the newest event time.

Ids are written as their JSON text, so that 7 and "7" are different ids, as in the API.
"""

from __future__ import annotations

# Shared by the scripts: the windows of one recorded payment, as `windows.HistoryIndex`
# computes them. Sums are returned as text: Redis would truncate a Lua number to an integer.
_PRELUDE = """
local P = ARGV[1]
local DAY = 86400000000
local WINDOWS = {1, 7, 30}
local DELAY = 7

local function bound(t) return string.format('%.0f', t) end
local function value_of(member) return string.match(member, '%z([^%z]*)$') end

local function windows(card_key, terminal_key, card_member, t)
  local out = {}
  local at = redis.call('ZRANK', card_key, card_member)
  local starts = {}
  for n = 1, 3 do
    starts[n] = redis.call('ZCOUNT', card_key, '-inf', bound(t - WINDOWS[n] * DAY))
  end
  local amounts = redis.call('ZRANGE', card_key, starts[3], at)
  for n = 1, 3 do
    local sum = 0
    for j = starts[n] - starts[3] + 1, #amounts do sum = sum + tonumber(value_of(amounts[j])) end
    out[#out + 1] = at - starts[n] + 1
    out[#out + 1] = string.format('%.17g', sum)
  end
  local near = redis.call('ZCOUNT', terminal_key, '-inf', bound(t - DELAY * DAY))
  local fars = {}
  for n = 1, 3 do
    fars[n] = redis.call('ZCOUNT', terminal_key, '-inf', bound(t - (DELAY + WINDOWS[n]) * DAY))
  end
  local labels = {}
  if near > fars[3] then labels = redis.call('ZRANGE', terminal_key, fars[3], near - 1) end
  for n = 1, 3 do
    local frauds = 0
    for j = fars[n] - fars[3] + 1, #labels do
      if value_of(labels[j]) == '1' then frauds = frauds + 1 end
    end
    out[#out + 1] = near - fars[n]
    out[#out + 1] = frauds
  end
  return out
end

local function windows_of(id)
  local h = redis.call('HMGET', P .. 'tx:' .. id, 'c', 'k', 'm', 'a', 't')
  return windows(P .. 'c:' .. h[1], P .. 'k:' .. h[2], h[3] .. '\\0' .. h[4], tonumber(h[5]))
end

local function remove(id)
  local key = P .. 'tx:' .. id
  local h = redis.call('HMGET', key, 'c', 'k', 'm', 'a', 'f')
  if not h[1] then return 0 end
  local label = (h[5] == '1') and '1' or '0'
  redis.call('ZREM', P .. 'c:' .. h[1], h[3] .. '\\0' .. h[4])
  redis.call('ZREM', P .. 'k:' .. h[2], h[3] .. '\\0' .. label)
  redis.call('ZREM', P .. 'time', id)
  redis.call('DEL', key)
  return 1
end

local function add(id, card, terminal, amount, time, head, label)
  local content = card .. '\\0' .. terminal .. '\\0' .. amount .. '\\0' .. time
  redis.call('HSET', P .. 'tx:' .. id, 'p', content, 'c', card, 'k', terminal, 'm', head,
    'a', amount, 't', time, 'f', label)
  redis.call('ZADD', P .. 'c:' .. card, time, head .. '\\0' .. amount)
  redis.call('ZADD', P .. 'k:' .. terminal, time, head .. '\\0' .. ((label == '1') and '1' or '0'))
  redis.call('ZADD', P .. 'time', time, id)
end

local function raise_newest(t)
  local newest = tonumber(redis.call('GET', P .. 'newest') or '')
  if not newest or t > newest then redis.call('SET', P .. 'newest', bound(t)) end
end
"""

# The payments of concurrent requests, each request's a group, and the answers given since
# the last call. ARGV: prefix, retention in us, how many answers, the answers (id, answer),
# then per group: how many payments, then per payment: id, card, terminal, amount, time,
# head. Returns per group "ok" and per payment: new (0/1), earlier answer, 12 window values;
# or "conflict" or "old" and the id: then nothing of that group is written.
RECORD = (
    _PRELUDE
    + """
local retention = tonumber(ARGV[2])
local newest = tonumber(redis.call('GET', P .. 'newest') or '')
local at = 4
for _ = 1, tonumber(ARGV[3]) do
  local key = P .. 'tx:' .. ARGV[at]
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'r', ARGV[at + 1]) end
  at = at + 2
end
local groups, newest_now = {}, newest
while at <= #ARGV do
  local group = {first = at + 1, count = tonumber(ARGV[at]), fresh = {}}
  at = group.first + group.count * 6
  for i = 0, group.count - 1 do
    local b = group.first + i * 6
    local id, t = ARGV[b], tonumber(ARGV[b + 4])
    if newest and t < newest - retention then group.verdict = {'old', id} break end
    local content = table.concat({ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]}, '\\0')
    local earlier = redis.call('HGET', P .. 'tx:' .. id, 'p')
    if earlier and earlier ~= content then group.verdict = {'conflict', id} break end
    group.fresh[i] = not earlier
  end
  if not group.verdict then
    for i = 0, group.count - 1 do
      if group.fresh[i] then
        local b = group.first + i * 6
        add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], '')
        local t = tonumber(ARGV[b + 4])
        if not newest_now or t > newest_now then newest_now = t end
      end
    end
  end
  groups[#groups + 1] = group
end
if newest_now and newest_now ~= newest then redis.call('SET', P .. 'newest', bound(newest_now)) end
local out = {}
for _, group in ipairs(groups) do
  if group.verdict then
    out[#out + 1] = group.verdict[1]
    out[#out + 1] = group.verdict[2]
  else
    out[#out + 1] = 'ok'
    for i = 0, group.count - 1 do
      local id = ARGV[group.first + i * 6]
      out[#out + 1] = group.fresh[i] and 1 or 0
      out[#out + 1] = group.fresh[i] and '' or (redis.call('HGET', P .. 'tx:' .. id, 'r') or '')
      for _, v in ipairs(windows_of(id)) do out[#out + 1] = v end
    end
  end
end
return out
"""
)

# ARGV: prefix, ids. Undoes RECORD for payments whose scoring failed.
FORGET = (
    _PRELUDE
    + """
for i = 2, #ARGV do remove(ARGV[i]) end
return 0
"""
)

# ARGV: prefix, then pairs of id and label (0/1). Returns per label: applied, unchanged or
# unknown.
LABEL = (
    _PRELUDE
    + """
local out = {}
for i = 2, #ARGV, 2 do
  local key, label = P .. 'tx:' .. ARGV[i], ARGV[i + 1]
  local h = redis.call('HMGET', key, 'k', 'm', 'f', 't')
  if not h[1] then
    out[#out + 1] = 'unknown'
  elseif h[3] == label then
    out[#out + 1] = 'unchanged'
  else
    local before = (h[3] == '1') and '1' or '0'
    if before ~= label then
      redis.call('ZREM', P .. 'k:' .. h[1], h[2] .. '\\0' .. before)
      redis.call('ZADD', P .. 'k:' .. h[1], h[4], h[2] .. '\\0' .. label)
    end
    redis.call('HSET', key, 'f', label)
    out[#out + 1] = 'applied'
  end
end
return out
"""
)

# ARGV: prefix, "c" or "k", how many payments, then the keys the URL may name (an integer
# id's first). Returns {} when none holds a payment, else {entity, 12 window values of its
# newest payment, then per payment newest first: id, content, label}.
VIEW = (
    _PRELUDE
    + """
local limit = tonumber(ARGV[3])
for i = 4, #ARGV do
  local key = P .. ARGV[2] .. ':' .. ARGV[i]
  local members = redis.call('ZREVRANGE', key, 0, limit - 1)
  if #members > 0 then
    local out = {ARGV[i]}
    local newest = string.match(members[1], '^[^%z]*%z([^%z]*)%z')
    for _, v in ipairs(windows_of(newest)) do out[#out + 1] = v end
    for _, member in ipairs(members) do
      local id = string.match(member, '^[^%z]*%z([^%z]*)%z')
      local h = redis.call('HMGET', P .. 'tx:' .. id, 'p', 'f')
      out[#out + 1] = id
      out[#out + 1] = h[1]
      out[#out + 1] = h[2]
    end
    return out
  end
end
return {}
"""
)

# ARGV: prefix, retention in us, at most how many. Returns how many were forgotten.
PRUNE = (
    _PRELUDE
    + """
local newest = tonumber(redis.call('GET', P .. 'newest') or '')
if not newest then return 0 end
local horizon = '(' .. bound(newest - tonumber(ARGV[2]))
local old = redis.call('ZRANGEBYSCORE', P .. 'time', '-inf', horizon, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(old) do remove(id) end
return #old
"""
)

# ARGV: prefix, then per payment: id, card, terminal, amount, time, head, label ("", 0, 1).
# Ids already kept are left as they are. Returns how many were new.
LOAD = (
    _PRELUDE
    + """
local loaded, newest = 0, nil
for b = 2, #ARGV, 7 do
  if redis.call('EXISTS', P .. 'tx:' .. ARGV[b]) == 0 then
    add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6])
    loaded = loaded + 1
    local t = tonumber(ARGV[b + 4])
    if not newest or t > newest then newest = t end
  end
end
if newest then raise_newest(newest) end
return loaded
"""
)
