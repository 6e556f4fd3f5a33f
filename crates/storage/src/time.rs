//! Times as share links carry them: seconds since the epoch inside tokens,
//! `2026-11-25T10:00:00Z` for people and for Azure, and lifetimes as
//! people type them (`72h`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now as `2026-11-25T10:00:00Z`.
pub fn now_iso() -> String {
    iso(now_secs())
}

/// `secs` since the epoch as `2026-11-25T10:00:00Z`.
pub fn iso(secs: u64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = veil_fhir::calendar::civil_from_days(days);
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
    if !(1..=12).contains(&mo)
        || d == 0
        || d > veil_fhir::calendar::days_in_month(y as i32, mo)
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let days = veil_fhir::calendar::days_from_civil(y as i32, mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + s)).ok()
}

/// A lifetime as people type it: `90s`, `30m`, `72h`, `7d` (a bare number
/// is hours).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(veil_storage::parse_lifetime("72h").unwrap(), Duration::from_secs(72 * 3600));
/// assert_eq!(veil_storage::parse_lifetime("7d").unwrap(), Duration::from_secs(7 * 86400));
/// assert!(veil_storage::parse_lifetime("0h").is_err());
/// assert!(veil_storage::parse_lifetime("soon").is_err());
/// ```
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "h"),
    };
    let scale = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}' is not a lifetime: write it as 90s, 30m, 72h or 7d")),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n.saturating_mul(scale))),
        _ => Err(format!("'{text}' is not a lifetime: write it as 90s, 30m, 72h or 7d")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_round_trip() {
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
