-- admin_v1: one operator change to the key pool and its audit entry, atomically, in one round trip.
-- Never on the request path: only the admin routes (`/v1/admin/...`) call it.
--
-- KEYS (all with the `{llmr}` hash tag):
--   KEYS[1]      audit LIST  newest first: one JSON entry per change, capped at ARGV `cap`
--   KEYS[2..]    the targets:
--                  disable, enable:  the key's dis HASH {reason, cfg, at, manual, by}
--                  clear_cooldown:   the cd HASH {until, reason, strikes} of each model of the group
--
-- ARGV[1] JSON:
--   {"action": "disable"|"enable"|"clear_cooldown", "target": key id | quota group,
--    "by": client id, "reason": text | null, "cap": audit entries kept}
--
-- Returns a JSON string: {"now": ms (Redis TIME), "changed": n}
--   changed: disable 1; enable 1 when a disabled mark (manual or automatic) was removed, else 0;
--   clear_cooldown the number of cooldown hashes removed.
--
-- Invariant: a manual mark (`manual` = "1") is honoured by reserve_v1 whatever the configuration
-- fingerprint, until `enable` deletes the whole hash (which also lifts an automatic mark). Every
-- call, changed or not, leaves exactly one audit entry {at, by, action, target, reason, changed}.

local spec = cjson.decode(ARGV[1])
local now = redis_now_ms()
local reason = spec.reason
if reason == nil or reason == cjson.null then reason = '' end
local changed = 0

if spec.action == 'disable' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'manual', '1', 'reason', reason, 'by', spec.by, 'at', now)
  changed = 1
elseif spec.action == 'enable' then
  changed = redis.call('DEL', KEYS[2])
elseif spec.action == 'clear_cooldown' then
  for i = 2, #KEYS do changed = changed + redis.call('DEL', KEYS[i]) end
else
  return redis.error_reply('admin_v1: unknown action ' .. tostring(spec.action))
end

redis.call('LPUSH', KEYS[1], cjson.encode({at = now, by = spec.by, action = spec.action, target = spec.target,
  reason = reason, changed = changed}))
redis.call('LTRIM', KEYS[1], 0, tonumber(spec.cap) - 1)

return cjson.encode({now = now, changed = changed})
