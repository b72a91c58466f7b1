-- stats_v1: read everything /stats, /metrics and /health need, in one round trip. Read-only:
-- it trims nothing and writes nothing, so it can run as often as dashboards poll.
--
-- KEYS (all with the `{llmr}` hash tag):
--   KEYS[1]  last   HASH  key_id -> last admission ms
--   KEYS[2]  gstat  HASH  global statistics counters
--   then 4 keys per (quota group, model), in ARGV `groups` order:
--     log ZSET (reservation id -> admission ms), tok HASH (rid -> input tokens, `_sum`),
--     day HASH {day, count}, cd HASH {until, reason, strikes}
--   then 2 keys per key, in ARGV `keys` order: dis HASH {reason, cfg, at}, kstat HASH counters
--   then 1 key per client, in ARGV `clients` order: cstat HASH counters
--   then (admin) 1 key: audit LIST of admin_v1 entries, newest first
--   then (budget) 3 keys per client, in ARGV `clients` order: budget day HASH {day, used},
--     minute log ZSET (rid -> ms), minute tokens HASH (rid -> tokens, `_sum`)
--
-- ARGV[1] JSON: {"window_ms": n, "groups": n, "keys": n, "clients": n, "audit": entries to read}
--
-- Returns a JSON string:
--   {"now": ms (Redis TIME), "day": Pacific day number of now,
--    "last": [key_id, ms, ...],
--    "global": [field, value, ...],
--    "groups": [{"count": live entries, "tokens": input tokens of the live entries,
--                "day": stored day number | null, "day_count": n, "cd": [field, value, ...]}],
--    "keys": [{"dis": [field, value, ...], "stats": [field, value, ...]}],
--    "clients": [[field, value, ...]],
--    "audit": [admin_v1 entry JSON, ...],          the newest `audit` entries, newest first
--    "budgets": [{"day": stored day | null, "used": n, "minute": live minute tokens}]  one per client
-- Hash contents come back as flat HGETALL lists of strings. cjson encodes an empty table as {}, so
-- an empty hash, and `groups`/`keys`/`clients` when ARGV asks for none, arrive as {} too.
--
-- Invariant: read-only. An entry admitted at t is live while t > now - window_ms, as in reserve_v1's trim: so the
-- figures are the ones the next reservation would see.

local spec = cjson.decode(ARGV[1])
local now = redis_now_ms()
local window = tonumber(spec.window_ms)
local today = pacific_day(now)
local cutoff = '(' .. tostring(now - window)

local out = {now = now, day = today, groups = {}, keys = {}, clients = {}}
out.last = redis.call('HGETALL', KEYS[1])
out.global = redis.call('HGETALL', KEYS[2])

local ki = 3
for i = 1, tonumber(spec.groups) do
  local log, tok, day, cd = KEYS[ki], KEYS[ki + 1], KEYS[ki + 2], KEYS[ki + 3]
  ki = ki + 4
  local live = redis.call('ZRANGEBYSCORE', log, cutoff, '+inf')
  local tokens = 0
  if #live > 0 then
    -- HMGET in slices: unpack has a stack limit.
    for s = 1, #live, 500 do
      local slice = {}
      for j = s, math.min(s + 499, #live) do slice[#slice + 1] = live[j] end
      for _, t in ipairs(redis.call('HMGET', tok, unpack(slice))) do tokens = tokens + (tonumber(t) or 0) end
    end
  end
  local d = redis.call('HMGET', day, 'day', 'count')
  out.groups[i] = {count = #live, tokens = tokens, day = tonumber(d[1]) or cjson.null,
    day_count = tonumber(d[2]) or 0, cd = redis.call('HGETALL', cd)}
end

for i = 1, tonumber(spec.keys) do
  out.keys[i] = {dis = redis.call('HGETALL', KEYS[ki]), stats = redis.call('HGETALL', KEYS[ki + 1])}
  ki = ki + 2
end

for i = 1, tonumber(spec.clients) do
  out.clients[i] = redis.call('HGETALL', KEYS[ki])
  ki = ki + 1
end

-- [admin: audit] The last operator changes, as admin_v1 wrote them.
local audit_n = tonumber(spec.audit) or 0
out.audit = (audit_n > 0) and redis.call('LRANGE', KEYS[ki], 0, audit_n - 1) or {}
-- [end admin: audit]
ki = ki + 1

-- [budget: read] Each client's budget use: today's tokens and the live minute's.
out.budgets = {}
for i = 1, tonumber(spec.clients) do
  local bday, blog, btok = KEYS[ki], KEYS[ki + 1], KEYS[ki + 2]
  ki = ki + 3
  local d = redis.call('HMGET', bday, 'day', 'used')
  local minute = 0
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', blog, cutoff, '+inf')) do
    minute = minute + (tonumber(redis.call('HGET', btok, rid)) or 0)
  end
  out.budgets[i] = {day = tonumber(d[1]) or cjson.null, used = tonumber(d[2]) or 0, minute = minute}
end
-- [end budget: read]

return cjson.encode(out)
