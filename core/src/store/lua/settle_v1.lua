-- settle_v1: close one reservation after its upstream attempt, in one round trip.
--
-- KEYS (all with the `{llmr}` hash tag):
--   KEYS[1] log    ZSET  the reservation's quota group + model sliding log
--   KEYS[2] tok    HASH  reservation id -> input tokens, `_sum`
--   KEYS[3] day    HASH  {day, count}
--   KEYS[4] cd     HASH  cooldown {until, reason, strikes}
--   KEYS[5] dis    HASH  disabled {reason, cfg, at} of the key
--   KEYS[6] kstat  HASH  per-key statistics counters
--   KEYS[7] gstat  HASH  global statistics counters
--   KEYS[8] cstat  HASH  the calling client's statistics counters
--   KEYS[9..11] only when the request holds a conversation lock: meta HASH, turns LIST, lock STRING
--   last 3 KEYS only with ARGV `budget`: the client's day HASH {day, used}, minute log ZSET and
--               minute tokens HASH (as in reserve_v1)
--
-- ARGV[1] JSON:
--   {"rid": reservation id, "key": key_id, "day": Pacific day of the reservation, "outcome": stats bucket name,
--    "release": bool        -- the attempt never consumed upstream quota: remove it entirely
--    "input": n | null      -- real promptTokenCount: replaces the estimate in its own window
--    "output": n, "thoughts": n,
--    "cooldown": null | {"kind": "delay"|"day"|"unknown", "delay_ms": n, "reason": text},
--    "disable": null | {"reason": text, "cfg": fingerprint},
--    "conv": null | {"turns": [turn json, ...], "ttl_s": n, "tokens": n, "est": n}
--                            -- non-null only with turns to append: append, count tokens, grow the
--                            -- history estimate (if the conversation still exists), record the
--                            -- turn's log key as meta `aff` (reserve_v1 prefers it), then unlock
--    "lock_id": request id | null -- with conversation KEYS: release the lock this request holds
--    "budget": null | {"day": Pacific day of the reservation, "est": tokens the reservation debited}
--                            -- the client's budget: a success uses (input or est) + output + thoughts,
--                            -- any other outcome gives the estimate back}
--
-- Returns a JSON string, always this shape (decoded by `store::settle`; both nullable keys are
-- always written, as null when unset):
--   {"now": ms, "cooldown_until": ms | null, "message_count": n | null}
--   cooldown_until: with a cooldown, the one now in force (a longer stored cooldown is kept);
--   message_count: the conversation's count after appending; null when nothing was appended.
--
-- Invariant: the token total of the log equals the sum of its live entries (the client budget's
-- minute log too). A settle that arrives
-- after its entry left the window changes nothing in the window (it expired harmlessly). A release
-- only gives back the day count if the reservation's Pacific day is still current.

local spec = cjson.decode(ARGV[1])
local now = redis_now_ms()
local log, tok, day, cd, dis, kstat, gstat, cstat = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local rid = spec.rid
-- [budget: keys] The budget keys are the last three; conversation keys are present only when
-- KEYS holds 3 more than the fixed 8 (plus the budget's).
local budget = (spec.budget and spec.budget ~= cjson.null) and spec.budget or nil
local nbudget = budget and 3 or 0
-- [end budget: keys]

if spec.release then
  redis.call('ZREM', log, rid)
  local t = tonumber(redis.call('HGET', tok, rid))
  if t then
    redis.call('HDEL', tok, rid)
    redis.call('HINCRBY', tok, '_sum', -t)
  end
  local d = tonumber(redis.call('HGET', day, 'day'))
  if d and d == tonumber(spec.day) then
    local c = tonumber(redis.call('HGET', day, 'count')) or 0
    if c > 0 then redis.call('HINCRBY', day, 'count', -1) end
  end
elseif spec.input ~= nil and spec.input ~= cjson.null then
  local t = tonumber(redis.call('HGET', tok, rid))
  if t then
    local actual = tonumber(spec.input)
    redis.call('HSET', tok, rid, actual)
    redis.call('HINCRBY', tok, '_sum', actual - t)
  end
end

local cooldown_until = nil
if spec.cooldown and spec.cooldown ~= cjson.null then
  local c = spec.cooldown
  local until_ms
  if c.kind == 'day' then
    local _, next_mid = pacific_day(now)
    until_ms = next_mid
  elseif c.kind == 'delay' then
    until_ms = now + math.max(1000, tonumber(c.delay_ms))
  else
    -- No details: 60 s, doubling on each repeat within the strike memory, capped at 15 min.
    local strikes = redis.call('HINCRBY', cd, 'strikes', 1)
    until_ms = now + math.min(60000 * 2 ^ (strikes - 1), 900000)
  end
  local prev = tonumber(redis.call('HGET', cd, 'until')) or 0
  if until_ms > prev then
    redis.call('HSET', cd, 'until', until_ms, 'reason', c.reason)
  else
    until_ms = prev
  end
  -- Strikes are remembered 15 minutes past the cooldown, then the key starts fresh.
  redis.call('PEXPIREAT', cd, until_ms + 900000)
  cooldown_until = until_ms
end

if spec.disable and spec.disable ~= cjson.null then
  redis.call('HSET', dis, 'reason', spec.disable.reason, 'cfg', spec.disable.cfg, 'at', now)
end

local out_n = tonumber(spec.output) or 0
local think_n = tonumber(spec.thoughts) or 0
local in_n = tonumber(spec.input) or 0
for _, s in ipairs({kstat, gstat, cstat}) do
  redis.call('HINCRBY', s, 'requests', 1)
  redis.call('HINCRBY', s, 'outcome:' .. spec.outcome, 1)
  if in_n > 0 then redis.call('HINCRBY', s, 'tokens_in', in_n) end
  if out_n > 0 then redis.call('HINCRBY', s, 'tokens_out', out_n) end
  if think_n > 0 then redis.call('HINCRBY', s, 'tokens_thinking', think_n) end
end
redis.call('HSET', kstat, 'last_used', now)
redis.call('HSET', cstat, 'last_used', now)

local message_count = nil
-- [budget: settle] Replace the estimate with what the client really used.
if budget then
  local bday, blog, btok = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
  local est_b = tonumber(budget.est) or 0
  local used = 0
  if (not spec.release) and spec.outcome == 'success' then
    local input = tonumber(spec.input) or est_b
    used = input + (tonumber(spec.output) or 0) + (tonumber(spec.thoughts) or 0)
  end
  local delta = used - est_b
  if delta ~= 0 then
    local d = tonumber(redis.call('HGET', bday, 'day'))
    if d and d == tonumber(budget.day) then
      local cur = tonumber(redis.call('HGET', bday, 'used')) or 0
      redis.call('HSET', bday, 'used', math.max(0, cur + delta))
    end
    local t = tonumber(redis.call('HGET', btok, rid))
    if t then
      redis.call('HSET', btok, rid, used)
      redis.call('HINCRBY', btok, '_sum', used - t)
    end
  end
  if spec.release then redis.call('ZREM', blog, rid); redis.call('HDEL', btok, rid) end
end
-- [end budget: settle]

if #KEYS >= 11 + nbudget then
  local meta, msgs, lock = KEYS[9], KEYS[10], KEYS[11]
  if spec.conv and spec.conv ~= cjson.null then
    local ttl = tonumber(spec.conv.ttl_s)
    if redis.call('EXISTS', meta) == 1 then
      for _, turn in ipairs(spec.conv.turns) do redis.call('RPUSH', msgs, turn) end
      message_count = redis.call('HINCRBY', meta, 'message_count', #spec.conv.turns)
      redis.call('HINCRBY', meta, 'total_tokens', tonumber(spec.conv.tokens) or 0)
      redis.call('HINCRBY', meta, 'hist_est', tonumber(spec.conv.est) or 0)
      redis.call('HSET', meta, 'updated_at', now)
      -- [affinity: write] The turn's quota group + model (its log key), preferred by reserve_v1.
      redis.call('HSET', meta, 'aff', log)
      -- [end affinity: write]
      redis.call('EXPIRE', meta, ttl)
      redis.call('EXPIRE', msgs, ttl)
    end
  end
  if redis.call('GET', lock) == spec.lock_id then redis.call('DEL', lock) end
end

return cjson.encode({now = now, cooldown_until = cooldown_until or cjson.null, message_count = message_count or cjson.null})
