//! The anonymizer's `dateShift` arithmetic (reference: ms-anonymizer.md
//! §5.2): the offset fold over `prefix + key`, and the shift of a written
//! date that zeroes the time and keeps the time-zone text — or, with Veil's
//! `veil.dateShiftToUtc`, moves the instant to UTC first, so that no
//! original offset is left to say where the true day lay.

use veil_util::calendar::{civil_from_days, days_from_civil};

/// The offset in days, in [-50, 50]: a fold over the UTF-8 bytes of
/// `prefix + key`. Not a secret-keyed hash, but the anonymizer's; kept
/// byte-for-byte so that outputs match.
pub(crate) fn offset_days(prefix: &str, key: &str) -> i64 {
    // One resource shifts many dates with the same prefix: remember the last.
    thread_local! {
        static LAST: std::cell::RefCell<(String, String, i64)> = const { std::cell::RefCell::new((String::new(), String::new(), 0)) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 == prefix && last.1 == key && !(prefix.is_empty() && key.is_empty()) {
            return last.2;
        }
        let o = prefix.bytes().chain(key.bytes()).fold(0i64, |o, b| (o * 131 + b as i64) % 101) - 50;
        *last = (prefix.to_string(), key.to_string(), o);
        o
    })
}

/// A date or date-time as written, split into its parts.
struct Written<'s> {
    year: i32,
    month: Option<u32>,
    day: Option<u32>,
    /// `T…` with its time-zone, when present.
    time: Option<&'s str>,
}

fn parse(s: &str) -> Option<Written<'_>> {
    let num = |t: &str| t.parse::<u32>().ok();
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s.trim_end_matches('Z'), None),
    };
    // A trailing zone on a date without time is dropped (`2001-01-01Z`).
    let date = date.split(['+']).next().unwrap_or(date);
    let mut parts = date.splitn(3, '-');
    let year = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month = parts.next().map(&num).unwrap_or(Some(0));
    let day = parts.next().map(|d| num(&d[..d.len().min(2)])).unwrap_or(Some(0));
    Some(Written { year, month: month.filter(|m| *m > 0), day: day.filter(|d| *d > 0), time })
}

/// Shifts a written date by `days`: the calendar date moves, every digit of
/// the time becomes `0` (fraction digits kept), the zone text stays.
/// `None` when the value has no day (the caller redacts instead).
pub(crate) fn shift(value: &str, days: i64) -> Option<String> {
    let w = parse(value)?;
    let (month, day) = (w.month?, w.day?);
    let base = days_from_civil(w.year, month, day) + days;
    let (y, m, d) = civil_from_days(base);
    if !(1..=9999).contains(&y) {
        return None;
    }
    let mut out = format!("{y:04}-{m:02}-{d:02}");
    if let Some(time) = w.time {
        out.push('T');
        // Digits before the zone become zeros; the zone (Z, +hh:mm, -hh:mm) is kept.
        let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
        out.extend(time[..zone_at].chars().map(|c| if c.is_ascii_digit() { '0' } else { c }));
        out.push_str(&time[zone_at..]);
    }
    Some(out)
}

/// Shifts a written date by `days` after moving a date-time to UTC: the
/// result is the shifted UTC day, at `T00:00:00Z` when there was a time.
/// `None` when the value has no day, or a time that does not parse.
pub(crate) fn shift_in_utc(value: &str, days: i64) -> Option<String> {
    let w = parse(value)?;
    let (month, day) = (w.month?, w.day?);
    let carry = match w.time {
        None => 0,
        Some(time) => {
            let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
            let (clock, zone) = time.split_at(zone_at);
            let mut hm = clock.splitn(3, ':').map(|p| p.get(..2).and_then(|p| p.parse::<i64>().ok()));
            let minutes = hm.next()?? * 60 + hm.next()??;
            let offset = match zone {
                "" | "Z" => 0,
                z => {
                    let sign = if z.starts_with('-') { -1 } else { 1 };
                    let (h, m) = z[1..].split_once(':')?;
                    sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
                }
            };
            (minutes - offset).div_euclid(24 * 60)
        }
    };
    let (y, m, d) = civil_from_days(days_from_civil(w.year, month, day) + carry + days);
    if !(1..=9999).contains(&y) {
        return None;
    }
    let time = if w.time.is_some() { "T00:00:00Z" } else { "" };
    Some(format!("{y:04}-{m:02}-{d:02}{time}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_vectors() {
        for (prefix_and_key, want) in [
            ("dummy", -21),
            ("", -50),
            ("123", 50),
            ("example123", 41),
            ("filename123", 4),
            ("123123", 17),
            ("bundle-references123", -48),
        ] {
            assert_eq!(offset_days("", prefix_and_key), want, "{prefix_and_key}");
        }
        let hashed_example = crate::crypto::hash(b"123", "example");
        assert_eq!(offset_days(&hashed_example, "123"), -20);
        assert_eq!(offset_days(&crate::crypto::hash(b"123", "100150"), "123"), -41);
        assert_eq!(offset_days(&crate::crypto::hash(b"123", "C-123"), "123"), -11);
    }

    #[test]
    fn shifts_in_utc_leave_no_original_offset() {
        for (input, want) in [
            ("2015-02-07", "2015-02-10"),
            ("2015-02-07T13:28:17-05:00", "2015-02-10T00:00:00Z"),
            // 21:30 at -05:00 is the next day in UTC; 01:00 at +05:00 the day before.
            ("2015-02-07T21:30:00-05:00", "2015-02-11T00:00:00Z"),
            ("2015-02-07T01:00:00.123+05:00", "2015-02-09T00:00:00Z"),
            ("2015-12-31T23:59:59Z", "2016-01-03T00:00:00Z"),
        ] {
            assert_eq!(shift_in_utc(input, 3).as_deref(), Some(want), "{input}");
        }
        assert_eq!(shift_in_utc("2015-02", 3), None, "no day: the caller redacts");
        assert_eq!(shift_in_utc("2015-02-07Tnoon", 3), None);
    }

    #[test]
    fn shift_vectors() {
        let days = offset_days("", "dummy");
        for (input, want) in [
            ("2015-02-07", "2015-01-17"),
            ("2015-02-07T13:28:17-05:00", "2015-01-17T00:00:00-05:00"),
            ("2015-02-07T13:28:17+05:00", "2015-01-17T00:00:00+05:00"),
            ("2015-02-07T13:28:17Z", "2015-01-17T00:00:00Z"),
            ("2015-02-07T13:28:17.12345-05:00", "2015-01-17T00:00:00.00000-05:00"),
            ("2015-02-07T01:01:01+00:00", "2015-01-17T00:00:00+00:00"),
        ] {
            assert_eq!(shift(input, days).as_deref(), Some(want), "{input}");
        }
        assert_eq!(shift("2001-01-01Z", 41).as_deref(), Some("2001-02-11"));
        assert_eq!(shift("2015-02", days), None, "no day: redacted by the caller");
        assert_eq!(shift("2015", days), None);
        assert_eq!(shift("2016-03-01", -1).as_deref(), Some("2016-02-29"));
        assert_eq!(shift("0001-01-01", -1), None, "out of range is refused, not a crash");
    }
}
