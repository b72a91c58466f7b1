-- Shared prelude: US-Pacific calendar maths, from Redis TIME only. Prepended to reserve_v1,
-- settle_v1 and stats_v1 (one EVAL carries both), so it has no KEYS, ARGV or return of its own.
-- Gemini's per-day quota resets at midnight America/Los_Angeles. DST runs from the second
-- Sunday of March 02:00 local (10:00 UTC) to the first Sunday of November 02:00 local
-- (09:00 UTC). Mirrored in Rust by `quota::pacific` and cross-checked by tests.
local DAY = 86400000
local HOUR = 3600000

-- Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function year_of(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y
end

-- Day number of the n-th Sunday (n >= 1) of a month.
local function nth_sunday(y, m, n)
  local first = days_from_civil(y, m, 1)
  local weekday = (first + 4) % 7 -- 1970-01-01 was a Thursday (4); 0 = Sunday
  local to_sunday = (7 - weekday) % 7
  return first + to_sunday + 7 * (n - 1)
end

-- Offset of Pacific local time from UTC at the UTC instant `ms`, in ms (negative).
local function pacific_offset(ms)
  local y = year_of(math.floor(ms / DAY))
  local dst_start = nth_sunday(y, 3, 2) * DAY + 10 * HOUR
  local dst_end = nth_sunday(y, 11, 1) * DAY + 9 * HOUR
  if ms >= dst_start and ms < dst_end then return -7 * HOUR end
  return -8 * HOUR
end

-- Pacific calendar day number containing `ms`, and the UTC ms of the next Pacific midnight.
local function pacific_day(ms)
  local day = math.floor((ms + pacific_offset(ms)) / DAY)
  local next_mid = (day + 1) * DAY - pacific_offset(ms)
  local off2 = pacific_offset(next_mid)
  next_mid = (day + 1) * DAY - off2
  return day, next_mid
end

local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
