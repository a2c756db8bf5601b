"""The Redis store's server-side scripts (Lua). A script runs atomically and is one round
trip: a whole batch is checked, recorded and given its windows at once, and two replicas
recording payments of one card at the same moment cannot interleave.

Layout, under a prefix P (few keys and commands per payment: Redis's own CPU is what a
busy history costs most):
- `P tx:<id>`: a payment's record, its fields joined by NUL: card, terminal, amount, time,
  label ("", 0, 1), member head. The first four are its content, compared on a retry.
- `P r:<id>`: the answer it got, for a retry.
- `P c:<card>` and `P k:<terminal>`: sorted sets of payments scored by event time (in
  microseconds, exact in a double). A member is `head NUL value`, where the head is the
  payment's id in a form that sorts bytewise as the benchmark orders ties, then NUL and the
  id's JSON text; the value is the amount (cards) or the label, 0 or 1 (terminals).
- `P day:<n>`: the ids recorded per day of event time, for pruning whole days;
  `P first_day`, `P newest` (event time) and `P count` (payments kept).
- `P frozen`: a hash of the frozen cards (see `app.fraud.alerts.redis_scripts`).

Ids are written as their JSON text, so that 7 and "7" are different ids, as in the API.
"""

from __future__ import annotations

# Shared by the scripts: the windows of one recorded payment, as `windows.HistoryIndex`
# computes them. Sums are returned as text: Redis would truncate a Lua number to an integer.
PRELUDE = r"""
local P = ARGV[1]
local DAY = 86400000000
local WINDOWS = {1, 7, 30}
local DELAY = 7
-- As `app.fraud.features`; the mean's window is the longest of WINDOWS.
local HIGH_DAYS, HIGH_TIMES, OVER_CAP = 14, 3, 1e6
local RECENT = 3  -- the terminal's last known payments whose frauds are counted

local function bound(t) return string.format('%.0f', t) end
-- Anchored at the start, `.*` runs to the end once and backs up to the last NUL: a few
-- steps, where an unanchored pattern would retry from every position.
local function value_of(member) return string.match(member, '^.*%z(.*)$') end
local ONE = string.byte('1')
local function day_of(t) return string.format('%.0f', math.floor(t / DAY)) end

-- A payment's record: card, terminal, amount, time, label ("", 0, 1), then its member head.
local function record_of(card, terminal, amount, time, label, head)
  return table.concat({card, terminal, amount, time, label, head}, '\0')
end
local function parse(record)
  return string.match(record, '^([^%z]*)%z([^%z]*)%z([^%z]*)%z([^%z]*)%z([^%z]*)%z(.*)$')
end
local function terminal_label(label) return (label == '1') and '1' or '0' end

-- The eighteen values in one string: a reply of fewer, longer elements parses faster.
local function windows(card, terminal, amount, t, head)
  local card_key, terminal_key = P .. 'c:' .. card, P .. 'k:' .. terminal
  local out = {}
  local at = redis.call('ZRANK', card_key, head .. '\0' .. amount)
  local starts = {}
  for n = 1, 3 do
    starts[n] = redis.call('ZCOUNT', card_key, '-inf', bound(t - WINDOWS[n] * DAY))
  end
  local amounts = redis.call('ZRANGE', card_key, starts[3], at)
  for j = 1, #amounts do amounts[j] = tonumber(value_of(amounts[j])) end
  for n = 1, 3 do
    local sum = 0  -- in time order, each window on its own: the sums `windows.py` makes
    for j = starts[n] - starts[3] + 1, #amounts do sum = sum + amounts[j] end
    out[#out + 1] = at - starts[n] + 1
    out[#out + 1] = string.format('%.17g', sum)
  end
  -- Against the card's earlier payments of 30 days (the payment, last, excluded), summed
  -- oldest first as `windows.py` and `training/` sum them: the same mean to the last bit.
  local earlier, total, over, high = #amounts - 1, 0, 1, 0
  for j = 1, earlier do total = total + amounts[j] end
  if earlier > 0 then
    local mean = total / earlier
    if mean > 0 then over = math.min(tonumber(amount) / mean, OVER_CAP) end
    local bar = HIGH_TIMES * mean
    local recent = redis.call('ZCOUNT', card_key, '-inf', bound(t - HIGH_DAYS * DAY))
    for j = recent - starts[3] + 1, earlier do
      if amounts[j] > bar then high = high + 1 end
    end
  end
  local near = redis.call('ZCOUNT', terminal_key, '-inf', bound(t - DELAY * DAY))
  local fars = {}
  for n = 1, 3 do
    fars[n] = redis.call('ZCOUNT', terminal_key, '-inf', bound(t - (DELAY + WINDOWS[n]) * DAY))
  end
  -- The known 30 days, member then event time: each one's label, and when.
  local known = {}
  if near > fars[3] then
    known = redis.call('ZRANGE', terminal_key, fars[3], near - 1, 'WITHSCORES')
  end
  local size = #known / 2
  local fraud = {}
  for j = 1, size do fraud[j] = string.byte(known[2 * j - 1], -1) == ONE end
  for n = 1, 3 do
    local frauds = 0
    for j = fars[n] - fars[3] + 1, size do
      if fraud[j] then frauds = frauds + 1 end
    end
    out[#out + 1] = near - fars[n]
    out[#out + 1] = frauds
  end
  out[#out + 1] = string.format('%.17g', over)
  out[#out + 1] = high
  -- The days since the first and the last known fraud (0: none), as `windows.py` divides.
  local first, last = 0, 0
  for j = 1, size do
    if fraud[j] then
      if first == 0 then first = j end
      last = j
    end
  end
  for _, j in ipairs({first, last}) do
    local age = 0
    if j > 0 then age = (t - tonumber(known[2 * j])) / DAY end
    out[#out + 1] = string.format('%.17g', age)
  end
  -- The frauds among the last RECENT of them, and how many those are.
  local recent, recent_frauds = math.min(size, RECENT), 0
  for j = size - recent + 1, size do
    if fraud[j] then recent_frauds = recent_frauds + 1 end
  end
  out[#out + 1] = recent_frauds
  out[#out + 1] = recent
  return table.concat(out, ' ')
end

local function windows_of(id)
  local card, terminal, amount, time, _, head = parse(redis.call('GET', P .. 'tx:' .. id))
  return windows(card, terminal, amount, tonumber(time), head)
end

-- Forgets a payment; its id stays in its day's list, which pruning drops whole.
local function remove(id)
  local key = P .. 'tx:' .. id
  local record = redis.call('GET', key)
  if not record then return 0 end
  local card, terminal, amount, _, label, head = parse(record)
  redis.call('ZREM', P .. 'c:' .. card, head .. '\0' .. amount)
  redis.call('ZREM', P .. 'k:' .. terminal, head .. '\0' .. terminal_label(label))
  redis.call('DEL', key, P .. 'r:' .. id)
  redis.call('DECR', P .. 'count')
  return 1
end

local function add(id, card, terminal, amount, time, head, label)
  redis.call('SET', P .. 'tx:' .. id, record_of(card, terminal, amount, time, label, head))
  redis.call('ZADD', P .. 'c:' .. card, time, head .. '\0' .. amount)
  redis.call('ZADD', P .. 'k:' .. terminal, time, head .. '\0' .. terminal_label(label))
  redis.call('RPUSH', P .. 'day:' .. day_of(tonumber(time)), id)
end

-- A payment's label, 0 or 1: applied, unchanged, or unknown (no such payment).
local function set_label(id, label)
  local key = P .. 'tx:' .. id
  local record = redis.call('GET', key)
  if not record then return 'unknown' end
  local card, terminal, amount, time, before, head = parse(record)
  if before == label then return 'unchanged' end
  if terminal_label(before) ~= label then
    redis.call('ZREM', P .. 'k:' .. terminal, head .. '\0' .. terminal_label(before))
    redis.call('ZADD', P .. 'k:' .. terminal, time, head .. '\0' .. label)
  end
  redis.call('SET', key, record_of(card, terminal, amount, time, label, head))
  return 'applied'
end

-- After adding: the newest time, the oldest day (where pruning starts), the count.
local function added(count, newest, oldest)
  if count == 0 then return end
  redis.call('INCRBY', P .. 'count', count)
  local known = tonumber(redis.call('GET', P .. 'newest') or '')
  if not known or newest > known then redis.call('SET', P .. 'newest', bound(newest)) end
  local first = tonumber(redis.call('GET', P .. 'first_day') or '')
  local day = math.floor(oldest / DAY)
  if not first or day < first then redis.call('SET', P .. 'first_day', bound(day)) end
end
"""

# The payments of concurrent requests, each request's a group, and the answers given since
# the last call. ARGV: prefix, retention in us, how many answers, the answers (id, answer),
# then per group: how many payments, then per payment: id, card, terminal, amount, time,
# head. Returns per group "ok" and per payment: new (0/1), earlier answer, the 14 window
# values (one string), whether its card is frozen (0/1); or "conflict" or "old" and the
# id: then nothing of that group is written.
RECORD = (
    PRELUDE
    + r"""
local retention = tonumber(ARGV[2])
local newest = tonumber(redis.call('GET', P .. 'newest') or '')
local at = 4
for _ = 1, tonumber(ARGV[3]) do
  local key = P .. 'tx:' .. ARGV[at]
  if redis.call('EXISTS', key) == 1 then redis.call('SET', P .. 'r:' .. ARGV[at], ARGV[at + 1]) end
  at = at + 2
end
local groups, count, latest, oldest = {}, 0, nil, nil
while at <= #ARGV do
  local group = {first = at + 1, count = tonumber(ARGV[at]), fresh = {}}
  at = group.first + group.count * 6
  for i = 0, group.count - 1 do
    local b = group.first + i * 6
    local id, t = ARGV[b], tonumber(ARGV[b + 4])
    if newest and t < newest - retention then group.verdict = {'old', id} break end
    local content = table.concat({ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ''}, '\0')
    local earlier = redis.call('GET', P .. 'tx:' .. id)
    if earlier and string.sub(earlier, 1, #content) ~= content then
      group.verdict = {'conflict', id}
      break
    end
    group.fresh[i] = not earlier
  end
  if not group.verdict then
    for i = 0, group.count - 1 do
      if group.fresh[i] then
        local b = group.first + i * 6
        add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], '')
        local t = tonumber(ARGV[b + 4])
        count = count + 1
        if not latest or t > latest then latest = t end
        if not oldest or t < oldest then oldest = t end
      end
    end
  end
  groups[#groups + 1] = group
end
added(count, latest, oldest)
local out = {}
for _, group in ipairs(groups) do
  if group.verdict then
    out[#out + 1] = group.verdict[1]
    out[#out + 1] = group.verdict[2]
  else
    out[#out + 1] = 'ok'
    for i = 0, group.count - 1 do
      local b = group.first + i * 6
      out[#out + 1] = group.fresh[i] and 1 or 0
      out[#out + 1] = group.fresh[i] and '' or (redis.call('GET', P .. 'r:' .. ARGV[b]) or '')
      local time = tonumber(ARGV[b + 4])
      out[#out + 1] = windows(ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], time, ARGV[b + 5])
      out[#out + 1] = redis.call('HEXISTS', P .. 'frozen', ARGV[b + 1])
    end
  end
end
return out
"""
)

# ARGV: prefix, retention in us, then per payment: id, card, terminal, amount, time, head.
# RECORD for one group, then undone: returns "ok" and per payment the 14 window values and
# whether its card is frozen; or "conflict" or "old" and the id. Nothing stays.
PREVIEW = (
    PRELUDE
    + r"""
local retention = tonumber(ARGV[2])
local newest = tonumber(redis.call('GET', P .. 'newest') or '')
for b = 3, #ARGV, 6 do
  local id, t = ARGV[b], tonumber(ARGV[b + 4])
  if newest and t < newest - retention then return {'old', id} end
  local content = table.concat({ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ''}, '\0')
  local earlier = redis.call('GET', P .. 'tx:' .. id)
  if earlier and string.sub(earlier, 1, #content) ~= content then return {'conflict', id} end
end
local fresh = {}
for b = 3, #ARGV, 6 do
  if redis.call('EXISTS', P .. 'tx:' .. ARGV[b]) == 0 then
    add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], '')
    fresh[#fresh + 1] = b
  end
end
local out = {'ok'}
for b = 3, #ARGV, 6 do
  out[#out + 1] = windows(ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5])
  out[#out + 1] = redis.call('HEXISTS', P .. 'frozen', ARGV[b + 1])
end
for i = #fresh, 1, -1 do  -- the last added first: each is the last of its day's list
  local b = fresh[i]
  remove(ARGV[b])
  redis.call('INCR', P .. 'count')  -- `remove` counted it out; it was never counted in
  redis.call('RPOP', P .. 'day:' .. day_of(tonumber(ARGV[b + 4])))
end
return out
"""
)

# ARGV: prefix, ids. Undoes RECORD for payments whose scoring failed.
FORGET = (
    PRELUDE
    + r"""
for i = 2, #ARGV do remove(ARGV[i]) end
return 0
"""
)

# ARGV: prefix, then pairs of id and label (0/1). Returns per label: applied, unchanged or
# unknown.
LABEL = (
    PRELUDE
    + r"""
local out = {}
for i = 2, #ARGV, 2 do out[#out + 1] = set_label(ARGV[i], ARGV[i + 1]) end
return out
"""
)

# ARGV: prefix, "c" or "k", how many payments, then the keys the URL may name (an integer
# id's first). Returns {} when none holds a payment, else {entity, the 14 window values of
# its newest payment (one string), then per payment newest first: id, record}.
VIEW = (
    PRELUDE
    + r"""
local limit = tonumber(ARGV[3])
for i = 4, #ARGV do
  local key = P .. ARGV[2] .. ':' .. ARGV[i]
  local members = redis.call('ZREVRANGE', key, 0, limit - 1)
  if #members > 0 then
    local out = {ARGV[i]}
    local newest = string.match(members[1], '^[^%z]*%z([^%z]*)%z')
    out[#out + 1] = windows_of(newest)
    for _, member in ipairs(members) do
      local id = string.match(member, '^[^%z]*%z([^%z]*)%z')
      out[#out + 1] = id
      out[#out + 1] = redis.call('GET', P .. 'tx:' .. id)
    end
    return out
  end
end
return {}
"""
)

# ARGV: prefix, retention in us. Forgets every day older than the retention's first whole
# day (each day's payments are listed by `add`); returns how many payments.
PRUNE = (
    PRELUDE
    + r"""
local newest = tonumber(redis.call('GET', P .. 'newest') or '')
local first = tonumber(redis.call('GET', P .. 'first_day') or '')
if not newest or not first then return 0 end
local keep_from = math.floor((newest - tonumber(ARGV[2])) / DAY)
local forgotten = 0
for day = first, keep_from - 1 do
  local key = P .. 'day:' .. bound(day)
  for _, id in ipairs(redis.call('LRANGE', key, 0, -1)) do forgotten = forgotten + remove(id) end
  redis.call('DEL', key)
end
if keep_from > first then redis.call('SET', P .. 'first_day', bound(keep_from)) end
return forgotten
"""
)

# ARGV: prefix, then per payment: id, card, terminal, amount, time, head, label ("", 0, 1).
# Ids already kept are left as they are. Returns how many were new.
LOAD = (
    PRELUDE
    + r"""
local loaded, latest, oldest = 0, nil, nil
for b = 2, #ARGV, 7 do
  if redis.call('EXISTS', P .. 'tx:' .. ARGV[b]) == 0 then
    add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6])
    loaded = loaded + 1
    local t = tonumber(ARGV[b + 4])
    if not latest or t > latest then latest = t end
    if not oldest or t < oldest then oldest = t end
  end
end
added(loaded, latest, oldest)
return loaded
"""
)
