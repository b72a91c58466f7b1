//! The US-Pacific calendar, where Google's per-day quotas (RPD) reset at midnight.
//!
//! This is the one Rust copy; `core/src/store/lua/pacific.lua` is its twin inside the scripts,
//! and the tests below pin both to the same dates (the Lua one through tests/quota). The mock
//! Gemini keeps its own copy on purpose, as an independent oracle (tools/mock-gemini/README.md).
//! DST: from the 2nd Sunday of March 02:00 to the 1st Sunday of November 02:00 local.

pub(crate) const DAY_MS: i64 = 86_400_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn nth_sunday(y: i64, m: i64, n: i64) -> i64 {
    let first = days_from_civil(y, m, 1);
    let weekday = (first + 4).rem_euclid(7);
    first + (7 - weekday) % 7 + 7 * (n - 1)
}

/// Offset of US-Pacific local time from UTC at `utc_ms`, in ms (-7 h in DST, else -8 h).
pub fn pacific_offset_ms(utc_ms: i64) -> i64 {
    let (y, _, _) = civil_from_days(utc_ms.div_euclid(DAY_MS));
    let start = nth_sunday(y, 3, 2) * DAY_MS + 10 * HOUR_MS;
    let end = nth_sunday(y, 11, 1) * DAY_MS + 9 * HOUR_MS;
    if utc_ms >= start && utc_ms < end {
        -7 * HOUR_MS
    } else {
        -8 * HOUR_MS
    }
}

/// The Pacific calendar day containing `utc_ms` and the UTC ms of the next Pacific midnight,
/// when Gemini's per-day quotas reset.
pub fn pacific_day(utc_ms: i64) -> (i64, i64) {
    let day = (utc_ms + pacific_offset_ms(utc_ms)).div_euclid(DAY_MS);
    let guess = (day + 1) * DAY_MS - pacific_offset_ms(utc_ms);
    (day, (day + 1) * DAY_MS - pacific_offset_ms(guess))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, m: i64, d: i64, h: i64, min: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS + h * HOUR_MS + min * 60_000
    }

    #[test]
    fn pacific_offsets_follow_us_dst() {
        // 2026: DST from Sun 8 March 10:00 UTC to Sun 1 November 09:00 UTC.
        assert_eq!(pacific_offset_ms(utc(2026, 3, 8, 9, 59)), -8 * HOUR_MS);
        assert_eq!(pacific_offset_ms(utc(2026, 3, 8, 10, 0)), -7 * HOUR_MS);
        assert_eq!(pacific_offset_ms(utc(2026, 11, 1, 8, 59)), -7 * HOUR_MS);
        assert_eq!(pacific_offset_ms(utc(2026, 11, 1, 9, 0)), -8 * HOUR_MS);
        assert_eq!(pacific_offset_ms(utc(2026, 7, 1, 0, 0)), -7 * HOUR_MS);
    }

    #[test]
    fn next_pacific_midnight() {
        // 2026-11-28 20:58 UTC is 12:58 PST; midnight PST is 08:00 UTC on the 29th.
        let (day, next) = pacific_day(utc(2026, 11, 28, 20, 58));
        assert_eq!(civil_from_days(day), (2026, 11, 28));
        assert_eq!(next, utc(2026, 11, 29, 8, 0));
        // Summer: midnight PDT is 07:00 UTC.
        assert_eq!(pacific_day(utc(2026, 7, 4, 6, 59)).1, utc(2026, 7, 4, 7, 0));
        // The night DST ends: 31 Oct 23:00 PDT -> next midnight is 1 Nov 00:00 PDT = 07:00 UTC.
        assert_eq!(pacific_day(utc(2026, 11, 1, 6, 0)).1, utc(2026, 11, 1, 7, 0));
        // The day DST ends, midnight after is PST: 2 Nov 08:00 UTC.
        assert_eq!(pacific_day(utc(2026, 11, 1, 12, 0)).1, utc(2026, 11, 2, 8, 0));
    }
}
