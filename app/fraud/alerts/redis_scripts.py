"""The Redis alert queue's scripts (Lua), each atomic and one round trip: two replicas
flagging one card's payments cannot open two alerts, two analysts resolving one alert
cannot both win, and a resolution's labels, state and freeze are written together or not
at all. (A script's writes are not undone if it fails half-way, so each checks everything
before its first write.)

Layout, under the history's prefix P:
- `P alert:next`: the last alert id given.
- `P alert:<id>`: a hash: card, status, score, opened (us), payments (how many),
  resolution (JSON, once resolved). `P alert:<id>:flagged` (JSON per payment),
  `P alert:<id>:ids` (their ids as JSON) and `P alert:<id>:trail` (JSON events): lists.
- `P alerts:open` and `P alerts:resolved`: sorted sets of alert ids (12 digits, so that
  ties sort by id) by score.
- `P alert:card:<card>`: the card's open alert. `P alert:tx:<id>`: the alert a payment
  was flagged into.
- `P alerts:fraud`, `P alerts:genuine`: resolutions counted by outcome.
- `P frozen`: a hash from card to `<alert id or ''> NUL <freeze JSON>`.
"""

from __future__ import annotations

from app.fraud.history.redis_scripts import PRELUDE

_ALERTS = r"""
local function member(id) return string.format('%012d', tonumber(id)) end
local function alert_key(id) return P .. 'alert:' .. id end
"""

# ARGV: prefix, now (us), then per payment: id, card, score, flagged JSON. Returns how many
# alerts were opened.
FLAG = (
    PRELUDE
    + _ALERTS
    + r"""
local now, opened = ARGV[2], 0
for b = 3, #ARGV, 4 do
  local tx, card, score, flagged = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  -- Frozen since the payment was recorded (another analyst, another replica): no alert.
  local frozen = redis.call('HEXISTS', P .. 'frozen', card) == 1
  if not frozen and redis.call('EXISTS', P .. 'alert:tx:' .. tx) == 0 then
    local id = redis.call('GET', P .. 'alert:card:' .. card)
    local event = 'flagged'
    if not id then
      id = tostring(redis.call('INCR', P .. 'alert:next'))
      redis.call('HSET', alert_key(id), 'card', card, 'status', 'open', 'score', score,
        'opened', now, 'payments', 0)
      redis.call('SET', P .. 'alert:card:' .. card, id)
      redis.call('ZADD', P .. 'alerts:open', score, member(id))
      opened, event = opened + 1, 'opened'
    elseif tonumber(score) > tonumber(redis.call('HGET', alert_key(id), 'score')) then
      redis.call('HSET', alert_key(id), 'score', score)
      redis.call('ZADD', P .. 'alerts:open', score, member(id))
    end
    redis.call('HINCRBY', alert_key(id), 'payments', 1)
    redis.call('SET', P .. 'alert:tx:' .. tx, id)
    redis.call('RPUSH', alert_key(id) .. ':flagged', flagged)
    redis.call('RPUSH', alert_key(id) .. ':ids', tx)
    redis.call('RPUSH', alert_key(id) .. ':trail',
      '{"event":"' .. event .. '","transaction_id":' .. tx .. ',"at_us":' .. now .. '}')
  end
end
return opened
"""
)

_FIELDS = "'card', 'status', 'score', 'opened', 'payments', 'resolution'"

# ARGV: prefix, status, limit, then the cursor's score and id ('' for the first page).
# Returns per alert: its id, then its fields as `_FIELDS` names them.
PAGE = (
    PRELUDE
    + _ALERTS
    + r"""
local key, limit = P .. 'alerts:' .. ARGV[2], tonumber(ARGV[3])
local members = {}
if ARGV[4] == '' then
  members = redis.call('ZREVRANGEBYSCORE', key, '+inf', '-inf', 'LIMIT', 0, limit)
else
  local after, last = tonumber(ARGV[4]), member(ARGV[5])
  local ties = redis.call('ZCOUNT', key, ARGV[4], ARGV[4])
  local near = redis.call('ZREVRANGEBYSCORE', key, ARGV[4], '-inf', 'WITHSCORES', 'LIMIT', 0,
    limit + ties)
  for i = 1, #near, 2 do
    if #members == limit then break end
    if tonumber(near[i + 1]) < after or near[i] < last then members[#members + 1] = near[i] end
  end
end
local out = {}
for _, m in ipairs(members) do
  local id = tostring(tonumber(m))
  out[#out + 1] = id
  out[#out + 1] = redis.call('HMGET', alert_key(id), """
    + _FIELDS
    + r""")
end
return out
"""
)

# ARGV: prefix, id. Returns {} for no such alert, else {fields, flagged, trail}.
GET = (
    PRELUDE
    + _ALERTS
    + r"""
local key = alert_key(ARGV[2])
if redis.call('EXISTS', key) == 0 then return {} end
return {
  redis.call('HMGET', key, """
    + _FIELDS
    + r"""),
  redis.call('LRANGE', key .. ':flagged', 0, -1),
  redis.call('LRANGE', key .. ':trail', 0, -1),
}
"""
)

# ARGV: prefix, id, outcome (fraud or genuine), resolution JSON, its trail event, then the
# freeze ('' for none) and its trail event. Returns ok, unknown or resolved.
RESOLVE = (
    PRELUDE
    + _ALERTS
    + r"""
local id, outcome = ARGV[2], ARGV[3]
local key = alert_key(id)
local status = redis.call('HGET', key, 'status')
if not status then return 'unknown' end
if status ~= 'open' then
  -- The same resolution again: this script, run twice by a client retry after a lost reply.
  if redis.call('HGET', key, 'resolution') == ARGV[4] then return 'ok' end
  return 'resolved'
end
local label = (outcome == 'fraud') and '1' or '0'
for _, tx in ipairs(redis.call('LRANGE', key .. ':ids', 0, -1)) do set_label(tx, label) end
local card, score = unpack(redis.call('HMGET', key, 'card', 'score'))
redis.call('HSET', key, 'status', 'resolved', 'resolution', ARGV[4])
redis.call('ZREM', P .. 'alerts:open', member(id))
redis.call('ZADD', P .. 'alerts:resolved', score, member(id))
if redis.call('GET', P .. 'alert:card:' .. card) == id then
  redis.call('DEL', P .. 'alert:card:' .. card)
end
redis.call('RPUSH', key .. ':trail', ARGV[5])
redis.call('INCR', P .. 'alerts:' .. outcome)
if ARGV[6] ~= '' and redis.call('HSETNX', P .. 'frozen', card, ARGV[6]) == 1 then
  redis.call('RPUSH', key .. ':trail', ARGV[7])
end
return 'ok'
"""
)

# ARGV: prefix, card, freeze. Returns 1 if frozen now (by this freeze), 0 if it was frozen
# before.
FREEZE = r"""
if redis.call('HSETNX', ARGV[1] .. 'frozen', ARGV[2], ARGV[3]) == 1 then return 1 end
-- The same freeze again (a retry after a lost reply) is this one.
return (redis.call('HGET', ARGV[1] .. 'frozen', ARGV[2]) == ARGV[3]) and 1 or 0
"""

# ARGV: prefix, the trail event, then the cards the URL may name. Returns {} when none is
# frozen, else {card, its freeze as kept}.
UNFREEZE = (
    PRELUDE
    + _ALERTS
    + r"""
for i = 3, #ARGV do
  local freeze = redis.call('HGET', P .. 'frozen', ARGV[i])
  if freeze then
    redis.call('HDEL', P .. 'frozen', ARGV[i])
    local alert = string.match(freeze, '^([^%z]*)%z')
    if alert ~= '' then redis.call('RPUSH', alert_key(alert) .. ':trail', ARGV[2]) end
    return {ARGV[i], freeze}
  end
end
return {}
"""
)

# ARGV: prefix. Returns card, freeze, card, freeze...
FROZEN = r"""
return redis.call('HGETALL', ARGV[1] .. 'frozen')
"""

# ARGV: prefix, card. Returns its freeze as kept, or nil.
FREEZE_OF = r"""
return redis.call('HGET', ARGV[1] .. 'frozen', ARGV[2])
"""
