-- reserve_v1: choose a key and reserve its quota, atomically, in one round trip.
--
-- KEYS (every name carries the `{llmr}` hash tag, so one call stays in one Cluster slot):
--   KEYS[1]                 HASH  key_id -> last admission ms (tie-break and /stats last_used)
--   next #buckets keys       HASH  token bucket {tokens, ts}, in ARGV `buckets` order (client, then global)
--   next 3 keys if conv      HASH conversation meta, LIST conversation turns, STRING conversation lock
--   next 3 keys if budget    HASH client day {day, used}, ZSET client minute log (rid -> ms),
--                            HASH client minute tokens (rid -> tokens, `_sum`)
--   next ARGV `owned` keys   HASH owner record {group, key, client, meta} of each file / cached content
--                            the request names (absent: unknown to the router, no restriction)
--   next 5 keys per candidate, in ARGV order:
--     log  ZSET  reservation id -> admission ms         (sliding log of the quota group + model)
--     tok  HASH  reservation id -> input tokens, `_sum` (running total of the live entries)
--     day  HASH  {day = Pacific day number, count}      (requests this Pacific day)
--     cd   HASH  {until, reason, strikes}               (cooldown of the quota group + model)
--     dis  HASH  {reason, cfg, at}                      (key disabled, for config fingerprint cfg)
--                or {manual = "1", reason, by, at}       (disabled by an operator: any fingerprint)
--
-- ARGV[1] JSON:
--   {"rid": reservation id, "est": estimated input tokens, "window_ms": 60000, "cfg": config fingerprint,
--    "buckets": [{"rate": refill per minute, "burst": capacity, "name": "client"|"global"}],
--    "conv": null | {"owner": client id, "lock_id": request id, "lock_ms": lock lease, "pick_model": bool,
--             "budget"?: context budget in tokens},
--    "budget": null | {"daily": tokens per Pacific day | null, "tpm": tokens per window | null},
--    "owned": number of owner-record KEYS (files and cached contents the request names),
--    "cands": [{"k": key_id, "m": model, "rpm": n, "tpm": n, "rpd": n, "w": weight}],
--    "model": the request's model (candidates of other models are skipped; null = no filter)}
--   With conv.pick_model, the conversation's stored `model` replaces `model` when it has one.
--   With conv.budget (the context budget; not the top-level client `budget`), only the newest
--   turns are read back (LRANGE from the tail, 32 at a time): enough that their stored per-turn
--   `est` (each turn's JSON starts `{"at":ms,"est":n,`) exceeds the budget and they include a user
--   turn opening an exchange (no functionResponse). The engine trims by exchange within them
--   exactly as it would the whole history (a turn without `est` counts 0, so older histories are
--   read whole). When turns were left out, `history` starts
--   with the marker `{"skipped":n}` (n turns not read), which the engine strips.
--   Several candidates may share the same log/tok/day/cd keys (one quota group): they share one quota.
--
-- Returns a JSON string, one of (decoded by `store::reserve`, which rejects any other field):
--   {"ok":1,"key":key_id,"model":the candidate's m,"rid":rid,"now":ms,"day":pday,"est":tokens reserved,
--    "history":[turn json...],"system":text}
--      est includes the conversation's hist_est (or, when turns were left out and every turn read
--      has an `est`, the sum of those read); history is absent without conv and, because cjson
--      writes an empty table as an object, `{}` for a conversation with no turns yet; system is
--      absent unless the conversation stores one.
--   {"ok":0,"limit":"rpm"|"tpm"|"rpd"|"cooldown"|"disabled","retry_at":ms|null,"now":ms}
--      retry_at is null only when just disabled keys were left (waiting frees nothing).
--   {"ok":0,"limit":"client_rate"|"global_rate","retry_at":ms,"now":ms,"bucket_limit":burst,
--    "bucket_remaining":0}                           the first empty bucket, in ARGV order
--   {"ok":0,"limit":"client_budget","retry_at":ms,"now":ms}  the caller's own token budget is used up:
--      retry_at is the next Pacific midnight (daily) or when the window frees (tpm)
--   {"ok":0,"limit":"too_large","now":ms}           the estimate exceeds every candidate's tpm
--   {"ok":0,"limit":"no_candidates","model":m|null,"now":ms}  no candidate serves the chosen model
--   {"ok":0,"conv":"not_found"|"busy","now":ms}
--
-- Invariant: for every (quota group, model), the log never holds more than rpm entries admitted
-- within any window_ms, the live token sum never exceeds tpm, and the day count never exceeds rpd.
-- A request is refused only when admitting it would break one of those limits, or a bucket is empty.
-- A key whose dis hash holds `manual` is never chosen, under any configuration fingerprint.
-- When an owner record names a quota group, only that group's candidates are considered (the first
-- record found decides), so a file or cached content never goes to another project's key.
-- Among candidates with room, one whose log is the conversation meta's `aff` (its previous turn's
-- quota group + model) is chosen first.
-- A client budget's day `used` and live minute `_sum` never exceed daily / tpm through an admission
-- (settle_v1 then replaces the estimate with the real usage).
-- A request that is not admitted consumes no quota or bucket: its only writes are trimming entries
-- that had already left the window, and a conversation lock it took is released before returning.

local spec = cjson.decode(ARGV[1])
local now = redis_now_ms()
local window = tonumber(spec.window_ms)
local est = tonumber(spec.est)
local today, next_midnight = pacific_day(now)
local ki = 2

-- Buckets are checked first but only debited once a key is reserved.
local buckets = {}
for i, b in ipairs(spec.buckets or {}) do
  local key = KEYS[ki]; ki = ki + 1
  local st = redis.call('HMGET', key, 'tokens', 'ts')
  local burst = tonumber(b.burst)
  local rate = tonumber(b.rate) / 60000
  local tokens = tonumber(st[1]) or burst
  local ts = tonumber(st[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
  if tokens < 1 then
    local wait = math.ceil((1 - tokens) / rate)
    return cjson.encode({ok = 0, limit = b.name .. '_rate', retry_at = now + wait, now = now,
      bucket_limit = burst, bucket_remaining = 0})
  end
  buckets[i] = {key = key, tokens = tokens, burst = burst, rate = rate}
end

local conv = nil
local history = nil
if spec.conv and spec.conv ~= cjson.null then
  conv = {meta = KEYS[ki], msgs = KEYS[ki + 1], lock = KEYS[ki + 2]}
  ki = ki + 3
  local owner = redis.call('HGET', conv.meta, 'owner')
  if (not owner) or owner ~= spec.conv.owner then
    return cjson.encode({ok = 0, conv = 'not_found', now = now})
  end
  -- The lock is re-entrant for the same request, so failover attempts keep it.
  local held = redis.call('GET', conv.lock)
  if held and held ~= spec.conv.lock_id then
    return cjson.encode({ok = 0, conv = 'busy', now = now})
  end
  if not held then
    redis.call('SET', conv.lock, spec.conv.lock_id, 'PX', tonumber(spec.conv.lock_ms))
    conv.acquired = true
  end
  local hist_est = tonumber(redis.call('HGET', conv.meta, 'hist_est')) or 0
  local ctx_budget = tonumber(spec.conv.budget)
  if ctx_budget == nil then
    history = redis.call('LRANGE', conv.msgs, 0, -1)
  else
    -- Newest first until the turns read exceed the budget and hold an exchange opener.
    local start = redis.call('LLEN', conv.msgs)
    local sum, opener, unknown, tail, done = 0, false, false, {}, false
    while start > 0 and not done do
      local from = math.max(0, start - 32)
      local chunk = redis.call('LRANGE', conv.msgs, from, start - 1)
      for j = #chunk, 1, -1 do
        if sum > ctx_budget and opener then done = true; break end
        local t = chunk[j]
        tail[#tail + 1] = t
        start = from + j - 1
        local e = tonumber(string.match(t, '^{"at":%-?%d+,"est":(%d+),'))
        if e == nil then unknown = true end
        sum = sum + (e or 0)
        if string.sub(t, -14) == '"role":"user"}' and not string.find(t, '"functionResponse"', 1, true) then
          opener = true
        end
      end
    end
    history = {}
    if start > 0 then
      history[1] = '{"skipped":' .. start .. '}'
      -- What can be sent is at most what was read: reserve that, not the whole history.
      if not unknown then hist_est = math.min(hist_est, sum) end
    end
    for j = #tail, 1, -1 do history[#history + 1] = tail[j] end
  end
  -- The stored history (and system instruction) is part of the prompt: reserve its estimate too.
  est = est + hist_est
  conv.system = redis.call('HGET', conv.meta, 'system')
  -- [affinity: read] The log key (quota group + model) of the conversation's last turn.
  conv.aff = redis.call('HGET', conv.meta, 'aff') or nil
  -- [end affinity: read]
end

-- [budget: keys] The caller's token budget keys, read here in KEYS order, checked below.
local budget = nil
if spec.budget and spec.budget ~= cjson.null then
  budget = {day = KEYS[ki], log = KEYS[ki + 1], tok = KEYS[ki + 2],
    daily = tonumber(spec.budget.daily), tpm = tonumber(spec.budget.tpm)}
  ki = ki + 3
end
-- [end budget: keys]

-- [files: owners] The quota group owning the files / cached contents the request names.
local owner_prefix = nil
for _ = 1, (tonumber(spec.owned) or 0) do
  local g = redis.call('HGET', KEYS[ki], 'group')
  ki = ki + 1
  if g and not owner_prefix then owner_prefix = '{llmr}:w:' .. g .. ':' end
end
-- [end files: owners]

-- A send that names no model uses the conversation's default model (or `spec.model`), chosen
-- here so that reading the conversation costs no extra round trip. Candidates of other models
-- are then skipped.
local model = spec.model
if conv and spec.conv.pick_model then
  local m = redis.call('HGET', conv.meta, 'model')
  if m then model = m end
end

-- Drop entries that left the window (admitted at t with t + window <= now, as in
-- `quota::SlidingLog` and `free_at`) from a group's log, keeping the token total in step.
local function trim(log, tok)
  local cutoff = now - window
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then return end
    local toks = redis.call('HMGET', tok, unpack(old))
    local freed = 0
    for _, t in ipairs(toks) do freed = freed + (tonumber(t) or 0) end
    redis.call('HDEL', tok, unpack(old))
    redis.call('ZREM', log, unpack(old))
    if freed ~= 0 then redis.call('HINCRBY', tok, '_sum', -freed) end
  end
end

-- When would `need_tokens` tokens and one slot be free in this group's log?
local function free_at(log, tok, count, rpm, sum, tpm)
  local at = now
  if count >= rpm then
    local e = redis.call('ZRANGE', log, count - rpm, count - rpm, 'WITHSCORES')
    if e[2] then at = math.max(at, tonumber(e[2]) + window) end
  end
  local excess = sum + est - tpm
  if excess > 0 then
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    local freed = 0
    for j = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', tok, entries[j])) or 0)
      if freed >= excess then
        at = math.max(at, tonumber(entries[j + 1]) + window)
        break
      end
    end
  end
  return at
end

-- [budget: check] The caller's own budget, with the same estimate as the key quota. A refusal
-- writes nothing but the trim, and gives back a conversation lock this call took.
if budget then
  local refuse_at = nil
  if budget.daily then
    local d = redis.call('HMGET', budget.day, 'day', 'used')
    budget.used = (tonumber(d[1]) == today) and (tonumber(d[2]) or 0) or 0
    if budget.used + est > budget.daily then refuse_at = next_midnight end
  end
  if budget.tpm and not refuse_at then
    trim(budget.log, budget.tok)
    local sum = tonumber(redis.call('HGET', budget.tok, '_sum')) or 0
    if sum + est > budget.tpm then
      if est > budget.tpm then
        refuse_at = now + window
      else
        refuse_at = free_at(budget.log, budget.tok, 0, 1, sum, budget.tpm)
      end
    end
  end
  if refuse_at then
    if conv and conv.acquired then redis.call('DEL', conv.lock) end
    return cjson.encode({ok = 0, limit = 'client_budget', retry_at = refuse_at, now = now})
  end
end
-- [end budget: check]

local groups = {}
local best, best_score, best_last = nil, nil, nil
-- [affinity: choice] A candidate of the conversation's previous group (and model) that has room
-- wins over any other, so Google's implicit prompt cache can hit; otherwise the usual choice.
local best_pref = 0
local aff = conv and conv.aff
-- [end affinity: choice]
local soonest, soonest_limit = nil, nil
local too_large = true
local matched = 0
-- Only the offered keys' last admissions: the hash holds every key of the pool, and reading it
-- whole would make each reservation cost O(pool) whatever the engine offers.
local last_map = {}
if #spec.cands > 0 then
  local ids = {}
  for j, c in ipairs(spec.cands) do ids[j] = c.k end
  local last_used = redis.call('HMGET', KEYS[1], unpack(ids))
  for j, id in ipairs(ids) do last_map[id] = tonumber(last_used[j]) end
end

local function note_refusal(at, limit)
  if soonest == nil or at < soonest then soonest, soonest_limit = at, limit end
end

for _, c in ipairs(spec.cands) do
  local log, tok, day, cd, dis = KEYS[ki], KEYS[ki + 1], KEYS[ki + 2], KEYS[ki + 3], KEYS[ki + 4]
  ki = ki + 5
  local rpm, tpm, rpd = tonumber(c.rpm), tonumber(c.tpm), tonumber(c.rpd)
  local other_model = c.m ~= nil and c.m ~= cjson.null and model ~= nil and model ~= cjson.null and c.m ~= model
  -- [files: owners] Another project's key cannot see the request's files: skip it.
  if owner_prefix and string.sub(log, 1, #owner_prefix) ~= owner_prefix then other_model = true end
  -- [end files: owners]
  if est <= tpm and not other_model then too_large = false end
  local dis_cfg = (not other_model) and redis.call('HGET', dis, 'cfg')
  -- [admin: manual disable] An operator's mark (admin_v1 `disable`) holds whatever the
  -- configuration fingerprint, until admin_v1 `enable` deletes the hash.
  local dis_manual = (not other_model) and redis.call('HEXISTS', dis, 'manual') == 1
  -- [end admin: manual disable]
  if not other_model then matched = matched + 1 end
  if other_model then
    -- Not a candidate for this request's model.
  elseif dis_manual or (dis_cfg and dis_cfg == spec.cfg) then
    -- Disabled until the configuration changes: never frees by waiting.
    if soonest_limit == nil then soonest_limit = 'disabled' end
  else
    local g = groups[log]
    if g == nil then
      local until_ms = tonumber(redis.call('HGET', cd, 'until')) or 0
      trim(log, tok)
      local count = redis.call('ZCARD', log)
      local sum = tonumber(redis.call('HGET', tok, '_sum')) or 0
      local d = redis.call('HMGET', day, 'day', 'count')
      local dcount = (tonumber(d[1]) == today) and (tonumber(d[2]) or 0) or 0
      g = {until_ms = until_ms, count = count, sum = sum, dcount = dcount}
      groups[log] = g
    end
    if g.until_ms > now then
      note_refusal(g.until_ms, 'cooldown')
    elseif g.dcount >= rpd then
      note_refusal(next_midnight, 'rpd')
    elseif g.count >= rpm or g.sum + est > tpm then
      if est <= tpm then
        local limit = (g.count >= rpm) and 'rpm' or 'tpm'
        note_refusal(free_at(log, tok, g.count, rpm, g.sum, tpm), limit)
      end
    else
      local w = tonumber(c.w) or 1
      local head = math.min((rpm - g.count) / rpm, (tpm - g.sum - est) / tpm, (rpd - g.dcount) / rpd) * w
      local last = last_map[c.k] or 0
      local pref = (aff and log == aff) and 1 or 0  -- [affinity]
      if best == nil or pref > best_pref
        or (pref == best_pref and (head > best_score or (head == best_score and last < best_last))) then
        best = {c = c, log = log, tok = tok, day = day, g = g}
        best_score, best_last, best_pref = head, last, pref
      end
    end
  end
end

if best == nil then
  -- Only a lock taken by this call is given back; one held from an earlier attempt stays.
  if conv and conv.acquired then redis.call('DEL', conv.lock) end
  if matched == 0 then
    return cjson.encode({ok = 0, limit = 'no_candidates', model = model, now = now})
  end
  if too_large then
    return cjson.encode({ok = 0, limit = 'too_large', now = now})
  end
  return cjson.encode({ok = 0, limit = soonest_limit or 'disabled', retry_at = soonest or cjson.null, now = now})
end

redis.call('ZADD', best.log, now, spec.rid)
redis.call('PEXPIRE', best.log, window * 2)
redis.call('HSET', best.tok, spec.rid, est)
redis.call('HINCRBY', best.tok, '_sum', est)
redis.call('PEXPIRE', best.tok, window * 2)
if best.g.dcount == 0 then
  redis.call('HSET', best.day, 'day', today, 'count', 1)
else
  redis.call('HINCRBY', best.day, 'count', 1)
end
redis.call('PEXPIREAT', best.day, next_midnight + 3600000)
redis.call('HSET', KEYS[1], best.c.k, now)
-- [budget: debit] The estimate now; settle_v1 replaces it with the real usage.
if budget then
  if budget.daily then
    if (budget.used or 0) == 0 then
      redis.call('HSET', budget.day, 'day', today, 'used', est)
    else
      redis.call('HINCRBY', budget.day, 'used', est)
    end
    redis.call('PEXPIREAT', budget.day, next_midnight + 3600000)
  end
  if budget.tpm then
    redis.call('ZADD', budget.log, now, spec.rid)
    redis.call('PEXPIRE', budget.log, window * 2)
    redis.call('HSET', budget.tok, spec.rid, est)
    redis.call('HINCRBY', budget.tok, '_sum', est)
    redis.call('PEXPIRE', budget.tok, window * 2)
  end
end
-- [end budget: debit]
for _, b in pairs(buckets) do
  redis.call('HSET', b.key, 'tokens', tostring(b.tokens - 1), 'ts', now)
  redis.call('PEXPIRE', b.key, math.ceil(b.burst / b.rate) + 1000)
end

local out = {ok = 1, key = best.c.k, rid = spec.rid, now = now, day = today, est = est, model = best.c.m}
if history then out.history = history end
if conv and conv.system then out.system = conv.system end
return cjson.encode(out)
