//! The clock, and the two ways Veil writes an instant: with milliseconds
//! (`2026-11-22T17:40:00.123Z`) where records are ordered by their text,
//! and to the second (`2026-11-25T10:00:00Z`) where people and Azure read
//! it. Both are UTC, so their text order is their time order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

/// Seconds since the epoch, now (0 if the clock is set before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Today's date in UTC, as (year, month, day).
pub fn today() -> (i32, u32, u32) {
    civil_from_days((now_secs() / 86_400) as i64)
}

/// Now, as `2026-11-22T17:40:00.123Z`.
pub fn now_instant() -> String {
    instant_at(SystemTime::now())
}

/// `secs` seconds from now (before now when negative), as `now_instant` writes it.
pub fn instant_in(secs: i64) -> String {
    let now = SystemTime::now();
    let t =
        if secs >= 0 { now + Duration::from_secs(secs as u64) } else { now - Duration::from_secs(secs.unsigned_abs()) };
    instant_at(t)
}

fn instant_at(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Now as `2026-11-25T10:00:00Z`.
pub fn now_iso() -> String {
    iso(now_secs())
}

/// `secs` since the epoch as `2026-11-25T10:00:00Z`.
pub fn iso(secs: u64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Reads `2026-11-25T10:00:00Z` (fractions of a second allowed and dropped)
/// back into seconds since the epoch.
pub fn parse_iso(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || !text.ends_with('Z')
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let (y, mo, d, h, mi, s) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y as i32, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y as i32, mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + s)).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_sort_as_text() {
        let a = super::now_instant();
        let b = super::instant_in(90);
        assert_eq!(a.len(), 24);
        assert!(a < b);
        assert!(super::instant_in(-90) < a);
        assert_eq!(super::instant_at(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn seconds_round_trip() {
        for secs in [0, 951_782_400, 1_795_000_000, 4_102_444_799] {
            assert_eq!(super::parse_iso(&super::iso(secs)), Some(secs));
        }
        assert_eq!(super::iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::parse_iso("2026-11-25T10:00:00.123Z"), super::parse_iso("2026-11-25T10:00:00Z"));
        for bad in ["2026-02-30T00:00:00Z", "2026-11-25 10:00:00Z", "2026-11-25T10:00:00", "tomorrow"] {
            assert_eq!(super::parse_iso(bad), None, "{bad}");
        }
    }
}
