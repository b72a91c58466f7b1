//! US-Pacific calendar maths (PST = UTC-8, PDT = UTC-7), without a tz database.
//!
//! DST runs from the 2nd Sunday of March at 02:00 local standard time (10:00 UTC)
//! to the 1st Sunday of November at 02:00 local daylight time (09:00 UTC).

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 0 = Sunday … 6 = Saturday.
pub fn weekday(days: i64) -> i64 {
    (days + 4).rem_euclid(7)
}

fn nth_sunday(y: i64, month: u32, n: i64) -> i64 {
    let first = days_from_civil(y, month, 1);
    let first_sunday = first + (7 - weekday(first)) % 7;
    first_sunday + 7 * (n - 1)
}

/// UTC second at which DST starts in year `y` (2nd Sunday of March, 02:00 PST).
pub fn dst_start_utc(y: i64) -> i64 {
    nth_sunday(y, 3, 2) * DAY + 2 * HOUR + 8 * HOUR
}

/// UTC second at which DST ends in year `y` (1st Sunday of November, 02:00 PDT).
pub fn dst_end_utc(y: i64) -> i64 {
    nth_sunday(y, 11, 1) * DAY + 2 * HOUR + 7 * HOUR
}

pub fn is_dst(unix_secs: i64) -> bool {
    let (y, _, _) = civil_from_days((unix_secs - 8 * HOUR).div_euclid(DAY));
    unix_secs >= dst_start_utc(y) && unix_secs < dst_end_utc(y)
}

/// Offset of Pacific local time from UTC, in seconds (-28800 or -25200).
pub fn offset_secs(unix_secs: i64) -> i64 {
    if is_dst(unix_secs) {
        -7 * HOUR
    } else {
        -8 * HOUR
    }
}

/// Pacific calendar day number (days since 1970-01-01 in local time).
pub fn pacific_day(unix_secs: i64) -> i64 {
    (unix_secs + offset_secs(unix_secs)).div_euclid(DAY)
}

/// Unix second of the next Pacific midnight strictly after `unix_secs`.
pub fn next_midnight_secs(unix_secs: i64) -> i64 {
    let d = pacific_day(unix_secs) + 1;
    // Midnight is never inside a transition (those happen at 02:00 local), so the offset
    // in force at the candidate instant is the right one.
    let standard = d * DAY + 8 * HOUR;
    if is_dst(standard) {
        d * DAY + 7 * HOUR
    } else {
        standard
    }
}

/// Pacific day for a millisecond timestamp.
pub fn pacific_day_ms(unix_ms: u64) -> i64 {
    pacific_day((unix_ms / 1000) as i64)
}

/// Milliseconds from `unix_ms` to the next Pacific midnight (always > 0).
pub fn ms_to_next_midnight(unix_ms: u64) -> u64 {
    let next = next_midnight_secs((unix_ms / 1000) as i64) as u64 * 1000;
    next.saturating_sub(unix_ms).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, m: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, m, d) * DAY + h * HOUR + mi * 60
    }

    #[test]
    fn civil_roundtrip() {
        for z in [-800_000, -1, 0, 1, 10_957, 19_000, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(weekday(days_from_civil(2025, 3, 9)), 0); // a Sunday
    }

    #[test]
    fn dst_dates() {
        // 2024: Mar 10 – Nov 3; 2025: Mar 9 – Nov 2; 2026: Mar 8 – Nov 1.
        assert_eq!(dst_start_utc(2024), utc(2024, 3, 10, 10, 0));
        assert_eq!(dst_end_utc(2024), utc(2024, 11, 3, 9, 0));
        assert_eq!(dst_start_utc(2025), utc(2025, 3, 9, 10, 0));
        assert_eq!(dst_end_utc(2025), utc(2025, 11, 2, 9, 0));
        assert_eq!(dst_start_utc(2026), utc(2026, 3, 8, 10, 0));
        assert_eq!(dst_end_utc(2026), utc(2026, 11, 1, 9, 0));
    }

    #[test]
    fn offsets_around_transitions() {
        let start = dst_start_utc(2025);
        assert_eq!(offset_secs(start - 1), -8 * HOUR);
        assert_eq!(offset_secs(start), -7 * HOUR);
        let end = dst_end_utc(2025);
        assert_eq!(offset_secs(end - 1), -7 * HOUR);
        assert_eq!(offset_secs(end), -8 * HOUR);
        assert_eq!(offset_secs(utc(2025, 1, 15, 12, 0)), -8 * HOUR);
        assert_eq!(offset_secs(utc(2025, 7, 15, 12, 0)), -7 * HOUR);
    }

    #[test]
    fn midnights_in_winter_and_summer() {
        // 2025-01-15 12:00 UTC is 04:00 PST; next midnight = Jan 16 08:00 UTC.
        assert_eq!(next_midnight_secs(utc(2025, 1, 15, 12, 0)), utc(2025, 1, 16, 8, 0));
        // 2025-01-16 07:59 UTC is still Jan 15 23:59 PST.
        assert_eq!(next_midnight_secs(utc(2025, 1, 16, 7, 59)), utc(2025, 1, 16, 8, 0));
        // exactly at midnight → the following one
        assert_eq!(next_midnight_secs(utc(2025, 1, 16, 8, 0)), utc(2025, 1, 17, 8, 0));
        // Summer: midnight PDT = 07:00 UTC.
        assert_eq!(next_midnight_secs(utc(2025, 7, 15, 12, 0)), utc(2025, 7, 16, 7, 0));
        assert_eq!(pacific_day(utc(2025, 7, 16, 6, 59)), days_from_civil(2025, 7, 15));
        assert_eq!(pacific_day(utc(2025, 7, 16, 7, 0)), days_from_civil(2025, 7, 16));
    }

    #[test]
    fn spring_forward_day_is_23h() {
        // Mar 9 2025 starts at 08:00 UTC (PST) and ends at Mar 10 07:00 UTC (PDT).
        let m9 = next_midnight_secs(utc(2025, 3, 8, 20, 0));
        assert_eq!(m9, utc(2025, 3, 9, 8, 0));
        let m10 = next_midnight_secs(m9);
        assert_eq!(m10, utc(2025, 3, 10, 7, 0));
        assert_eq!(m10 - m9, 23 * HOUR);
        // 03:30 PDT on the transition day belongs to Mar 9.
        assert_eq!(pacific_day(utc(2025, 3, 9, 10, 30)), days_from_civil(2025, 3, 9));
    }

    #[test]
    fn fall_back_day_is_25h() {
        let m2 = next_midnight_secs(utc(2025, 11, 1, 20, 0));
        assert_eq!(m2, utc(2025, 11, 2, 7, 0));
        let m3 = next_midnight_secs(m2);
        assert_eq!(m3, utc(2025, 11, 3, 8, 0));
        assert_eq!(m3 - m2, 25 * HOUR);
        // 01:30 local happens twice; both are Nov 2.
        assert_eq!(pacific_day(utc(2025, 11, 2, 8, 30)), days_from_civil(2025, 11, 2));
        assert_eq!(pacific_day(utc(2025, 11, 2, 9, 30)), days_from_civil(2025, 11, 2));
        // 23:30 PST Nov 2 = 07:30 UTC Nov 3.
        assert_eq!(pacific_day(utc(2025, 11, 3, 7, 30)), days_from_civil(2025, 11, 2));
    }

    #[test]
    fn ms_helpers() {
        let t = utc(2025, 1, 16, 7, 59) as u64 * 1000 + 500;
        assert_eq!(ms_to_next_midnight(t), 59_500);
        assert_eq!(pacific_day_ms(t), days_from_civil(2025, 1, 15));
    }
}
