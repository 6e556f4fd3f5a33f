//! Instants as FHIR writes them, in UTC with milliseconds, so that their
//! text order is their time order (the stores compare them as text).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as `2026-11-22T17:40:00.123Z`.
pub fn now_instant() -> String {
    instant_at(SystemTime::now())
}

/// `secs` seconds from now, in the same form.
pub(crate) fn instant_in(secs: i64) -> String {
    let now = SystemTime::now();
    let t =
        if secs >= 0 { now + Duration::from_secs(secs as u64) } else { now - Duration::from_secs(secs.unsigned_abs()) };
    instant_at(t)
}

fn instant_at(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = veil_fhir::calendar::civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_sort_as_text() {
        let a = super::now_instant();
        let b = super::instant_in(90);
        assert_eq!(a.len(), 24);
        assert!(a < b);
        assert_eq!(super::instant_at(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
