//! Partial dates, date-times and times with their precision (FHIRPath N1
//! §Date/Time comparison and arithmetic). A value knows how much of it was
//! written: `@2014` and `@2014-01-01` are different values, and comparing them
//! gives "unknown" (empty), not false.

use std::cmp::Ordering;
use std::fmt::{self, Write};

/// Which of the three temporal types a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    /// `date`: year to day.
    Date,
    /// `dateTime`: year to sub-second, optional time-zone offset.
    DateTime,
    /// `time`: hour to sub-second, no date.
    Time,
}

/// How much of a temporal value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// Year only.
    Year,
    /// Year and month.
    Month,
    /// A whole day.
    Day,
    /// To the hour.
    Hour,
    /// To the minute.
    Minute,
    /// To the second.
    Second,
    /// With a fraction of a second.
    Fraction,
}

/// A date, date-time or time at some precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    /// Which type.
    pub kind: TemporalKind,
    /// How much is known; fields below it are zero (or one for month and day).
    pub precision: Precision,
    pub(crate) year: i32,
    pub(crate) month: u8,
    pub(crate) day: u8,
    pub(crate) hour: u8,
    pub(crate) minute: u8,
    pub(crate) second: u8,
    /// Fraction of a second in nanoseconds, and how many digits were written.
    pub(crate) nanos: u32,
    pub(crate) frac_digits: u8,
    /// Offset from UTC in minutes, when written.
    pub(crate) tz: Option<i32>,
}

fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    if s.len() < n || !s.as_bytes()[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

pub(crate) fn days_in_month(year: i32, month: u8) -> u8 {
    veil_util::calendar::days_in_month(year, month as u32) as u8
}

fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    veil_util::calendar::days_from_civil(y, m as u32, d as u32)
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let (y, m, d) = veil_util::calendar::civil_from_days(z);
    (y, m as u8, d as u8)
}

impl Temporal {
    fn empty(kind: TemporalKind) -> Temporal {
        Temporal {
            kind,
            precision: Precision::Year,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            nanos: 0,
            frac_digits: 0,
            tz: None,
        }
    }

    /// Parses a FHIR `date` (`2014`, `2014-01`, `2014-01-25`).
    pub fn parse_date(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Date);
        let rest = t.parse_date_part(s)?;
        rest.is_empty().then_some(t)
    }

    /// Parses a FHIR `dateTime` or `instant` (`2014`, `2014-01-25T14:30:14.559+01:00`),
    /// and the FHIRPath literal forms that end in `T` (`2014-01T`).
    pub fn parse_datetime(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::DateTime);
        let rest = t.parse_date_part(s)?;
        if rest.is_empty() {
            return Some(t);
        }
        let rest = rest.strip_prefix('T')?;
        if rest.is_empty() {
            return Some(t);
        }
        if t.precision != Precision::Day {
            return None;
        }
        let rest = t.parse_time_part(rest)?;
        let rest = t.parse_tz(rest)?;
        rest.is_empty().then_some(t)
    }

    /// Parses a `time` (`14`, `14:30`, `14:30:14.559`), without time zone.
    pub fn parse_time(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Time);
        let rest = t.parse_time_part(s)?;
        rest.is_empty().then_some(t)
    }

    fn parse_date_part<'s>(&mut self, s: &'s str) -> Option<&'s str> {
        let (y, mut rest) = digits(s, 4)?;
        self.year = y as i32;
        self.precision = Precision::Year;
        if let Some(r) = rest.strip_prefix('-') {
            let (m, r) = digits(r, 2)?;
            if !(1..=12).contains(&m) {
                return None;
            }
            self.month = m as u8;
            self.precision = Precision::Month;
            rest = r;
            if let Some(r) = rest.strip_prefix('-') {
                let (d, r) = digits(r, 2)?;
                if d < 1 || d > days_in_month(self.year, self.month) as u32 {
                    return None;
                }
                self.day = d as u8;
                self.precision = Precision::Day;
                rest = r;
            }
        }
        Some(rest)
    }

    fn parse_time_part<'s>(&mut self, s: &'s str) -> Option<&'s str> {
        let (h, mut rest) = digits(s, 2)?;
        if h > 23 {
            return None;
        }
        self.hour = h as u8;
        self.precision = Precision::Hour;
        if let Some(r) = rest.strip_prefix(':') {
            let (m, r) = digits(r, 2)?;
            if m > 59 {
                return None;
            }
            self.minute = m as u8;
            self.precision = Precision::Minute;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (sec, r) = digits(r, 2)?;
                if sec > 59 {
                    return None;
                }
                self.second = sec as u8;
                self.precision = Precision::Second;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let n = r.bytes().take_while(u8::is_ascii_digit).count();
                    if n == 0 {
                        return None;
                    }
                    let frac = &r[..n.min(9)];
                    self.nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
                    self.frac_digits = frac.len() as u8;
                    self.precision = Precision::Fraction;
                    rest = &r[n..];
                }
            }
        }
        Some(rest)
    }

    fn parse_tz<'s>(&mut self, s: &'s str) -> Option<&'s str> {
        if let Some(r) = s.strip_prefix('Z') {
            self.tz = Some(0);
            return Some(r);
        }
        let sign = match s.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some(s),
        };
        let (h, r) = digits(&s[1..], 2)?;
        let r = r.strip_prefix(':')?;
        let (m, r) = digits(r, 2)?;
        if h > 14 || m > 59 {
            return None;
        }
        self.tz = Some(sign * (h as i32 * 60 + m as i32));
        Some(r)
    }

    /// This value as a `date` (a date-time cut to the day).
    pub fn to_date(self) -> Temporal {
        let mut t = self;
        t.kind = TemporalKind::Date;
        t.precision = t.precision.min(Precision::Day);
        t.hour = 0;
        t.minute = 0;
        t.second = 0;
        t.nanos = 0;
        t.frac_digits = 0;
        t.tz = None;
        t
    }

    /// This value as a `dateTime` (a date keeps its precision).
    pub fn to_datetime(self) -> Temporal {
        let mut t = self;
        t.kind = TemporalKind::DateTime;
        t
    }

    /// Seconds since midnight (with fraction as nanos), used for time and
    /// for ordering within a day.
    fn day_nanos(&self) -> i128 {
        ((self.hour as i128 * 60 + self.minute as i128) * 60 + self.second as i128) * 1_000_000_000 + self.nanos as i128
    }

    /// The value moved to UTC; fields keep their precision.
    fn to_utc(self) -> Temporal {
        match self.tz {
            Some(off) if off != 0 && self.precision >= Precision::Hour => {
                let mut t = self.add_nanos(-(off as i128) * 60 * 1_000_000_000);
                t.tz = Some(0);
                t
            }
            _ => self,
        }
    }

    fn add_nanos(self, delta: i128) -> Temporal {
        const DAY: i128 = 86_400 * 1_000_000_000;
        let total = days_from_civil(self.year, self.month, self.day) as i128 * DAY + self.day_nanos() + delta;
        let days = total.div_euclid(DAY);
        let rem = total.rem_euclid(DAY);
        let mut t = self;
        if self.kind != TemporalKind::Time {
            let (y, m, d) = civil_from_days(days as i64);
            t.year = y;
            t.month = m;
            t.day = d;
        }
        let secs = (rem / 1_000_000_000) as i64;
        t.nanos = (rem % 1_000_000_000) as u32;
        t.hour = (secs / 3600) as u8;
        t.minute = (secs / 60 % 60) as u8;
        t.second = (secs % 60) as u8;
        t
    }

    /// Compares two values of compatible kinds. `None` means the answer is
    /// unknown: the values agree as far as both are known but one is more
    /// precise, or only one of them carries a time zone.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        let (a, b) =
            if self.tz.is_some() && other.tz.is_some() { (self.to_utc(), other.to_utc()) } else { (*self, *other) };
        let date_fields = a.kind != TemporalKind::Time;
        let pa = if a.precision == Precision::Fraction { Precision::Second } else { a.precision };
        let pb = if b.precision == Precision::Fraction { Precision::Second } else { b.precision };
        let common = pa.min(pb);
        if a.tz.is_some() != b.tz.is_some() && common >= Precision::Hour && date_fields {
            return None;
        }
        let fields: [(Precision, i64, i64); 6] = [
            (Precision::Year, a.year as i64, b.year as i64),
            (Precision::Month, a.month as i64, b.month as i64),
            (Precision::Day, a.day as i64, b.day as i64),
            (Precision::Hour, a.hour as i64, b.hour as i64),
            (Precision::Minute, a.minute as i64, b.minute as i64),
            // Seconds and their fraction are one precision (N1 §Comparison).
            (
                Precision::Second,
                a.second as i64 * 1_000_000_000 + a.nanos as i64,
                b.second as i64 * 1_000_000_000 + b.nanos as i64,
            ),
        ];
        for (p, x, y) in fields {
            if !date_fields && p <= Precision::Day {
                continue;
            }
            if p > common {
                break;
            }
            match x.cmp(&y) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if pa == pb { Some(Ordering::Equal) } else { None }
    }

    /// Adds an amount of a calendar unit. Units finer than the value's
    /// precision are converted and truncated to it (`@2014 + 25 months` is
    /// `@2016`); adding months clamps the day to the month's end.
    pub fn add(&self, amount: i64, unit: CalendarUnit) -> Option<Temporal> {
        use CalendarUnit::*;
        let p = self.precision;
        let (amount, unit) = match unit {
            Week => (amount.checked_mul(7)?, Day),
            u => (amount, u),
        };
        let unit_precision = match unit {
            Year => Precision::Year,
            Month => Precision::Month,
            Day | Week => Precision::Day,
            Hour => Precision::Hour,
            Minute => Precision::Minute,
            Second => Precision::Second,
            Millisecond => Precision::Fraction,
        };
        if self.kind == TemporalKind::Time && unit_precision <= Precision::Day {
            return None;
        }
        // Convert to the value's own precision when the unit is finer.
        let (amount, unit) = if unit_precision > p {
            let in_ms: i128 = match unit {
                Day | Week => amount as i128 * 86_400_000,
                Hour => amount as i128 * 3_600_000,
                Minute => amount as i128 * 60_000,
                Second => amount as i128 * 1000,
                Millisecond => amount as i128,
                Year | Month => 0,
            };
            match (unit, p) {
                (Month, Precision::Year) => (amount / 12, Year),
                (_, Precision::Year) => ((in_ms / (365 * 86_400_000)) as i64, Year),
                (_, Precision::Month) => ((in_ms / (30 * 86_400_000)) as i64, Month),
                (_, Precision::Day) => ((in_ms / 86_400_000) as i64, Day),
                (_, Precision::Hour) => ((in_ms / 3_600_000) as i64, Hour),
                (_, Precision::Minute) => ((in_ms / 60_000) as i64, Minute),
                (_, _) => ((in_ms / 1000) as i64, Second),
            }
        } else {
            (amount, unit)
        };
        let mut t = *self;
        match unit {
            Year | Month => {
                let months = if unit == Year { amount.checked_mul(12)? } else { amount };
                let total = t.year as i64 * 12 + (t.month as i64 - 1) + months;
                let year = total.div_euclid(12);
                if !(1..=9999).contains(&year) {
                    return None;
                }
                t.year = year as i32;
                t.month = (total.rem_euclid(12) + 1) as u8;
                t.day = t.day.min(days_in_month(t.year, t.month));
                Some(t)
            }
            _ => {
                let nanos: i128 = match unit {
                    Day | Week => amount as i128 * 86_400_000_000_000,
                    Hour => amount as i128 * 3_600_000_000_000,
                    Minute => amount as i128 * 60_000_000_000,
                    Second => amount as i128 * 1_000_000_000,
                    _ => amount as i128 * 1_000_000,
                };
                let t = t.add_nanos(nanos);
                (1..=9999).contains(&t.year).then_some(t)
            }
        }
    }

    /// The earliest (`high == false`) or latest instant this value could
    /// denote, written at `digits` of precision (FHIRPath 2.1 lowBoundary /
    /// highBoundary).
    pub fn boundary(&self, high: bool, digits: Option<u32>) -> Option<Temporal> {
        let target = match (self.kind, digits) {
            (TemporalKind::Date, None) => Precision::Day,
            (TemporalKind::Date, Some(4)) => Precision::Year,
            (TemporalKind::Date, Some(6)) => Precision::Month,
            (TemporalKind::Date, Some(8)) => Precision::Day,
            (TemporalKind::DateTime, None | Some(17)) => Precision::Fraction,
            (TemporalKind::DateTime, Some(4)) => Precision::Year,
            (TemporalKind::DateTime, Some(6)) => Precision::Month,
            (TemporalKind::DateTime, Some(8)) => Precision::Day,
            (TemporalKind::DateTime, Some(10)) => Precision::Hour,
            (TemporalKind::DateTime, Some(12)) => Precision::Minute,
            (TemporalKind::DateTime, Some(14)) => Precision::Second,
            (TemporalKind::Time, None | Some(9)) => Precision::Fraction,
            (TemporalKind::Time, Some(2)) => Precision::Hour,
            (TemporalKind::Time, Some(4)) => Precision::Minute,
            (TemporalKind::Time, Some(6)) => Precision::Second,
            _ => return None,
        };
        let mut t = *self;
        // `T08` is not a FHIR dateTime; it stands for 08:00 (HL7 suite).
        let this = if self.kind == TemporalKind::DateTime && self.precision == Precision::Hour {
            Temporal { precision: Precision::Minute, ..*self }
        } else {
            *self
        };
        if this.precision < Precision::Month {
            t.month = if high { 12 } else { 1 };
        }
        if this.precision < Precision::Day {
            t.day = if high { days_in_month(t.year, t.month) } else { 1 };
        }
        if this.precision < Precision::Hour {
            t.hour = if high { 23 } else { 0 };
        }
        if this.precision < Precision::Minute {
            t.minute = if high { 59 } else { 0 };
        }
        if this.precision < Precision::Second {
            t.second = if high { 59 } else { 0 };
        }
        if this.precision < Precision::Fraction {
            t.nanos = if high { 999_000_000 } else { 0 };
            t.frac_digits = 3;
        }
        if self.kind == TemporalKind::DateTime && self.tz.is_none() && target >= Precision::Hour {
            // The widest possible offsets: +14:00 is the earliest instant, -12:00 the latest.
            t.tz = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        t.precision = target;
        if target < Precision::Fraction {
            t.frac_digits = 0;
            t.nanos = 0;
        }
        if target < Precision::Hour {
            t.tz = None;
        }
        Some(t)
    }
}

/// The current instant in UTC, to the millisecond.
pub(crate) fn now() -> Temporal {
    let millis = veil_util::clock::now_millis() as i128;
    let (y, m, d) = civil_from_days((millis / 86_400_000) as i64);
    let mut t = Temporal::empty(TemporalKind::DateTime);
    t.year = y;
    t.month = m;
    t.day = d;
    t.precision = Precision::Fraction;
    t.frac_digits = 3;
    t.tz = Some(0);
    t.add_nanos((millis % 86_400_000) * 1_000_000)
}

/// Units that date and time arithmetic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarUnit {
    /// `year(s)`
    Year,
    /// `month(s)`
    Month,
    /// `week(s)`, `'wk'`
    Week,
    /// `day(s)`, `'d'`
    Day,
    /// `hour(s)`, `'h'`
    Hour,
    /// `minute(s)`, `'min'`
    Minute,
    /// `second(s)`, `'s'`
    Second,
    /// `millisecond(s)`, `'ms'`
    Millisecond,
}

impl CalendarUnit {
    /// The unit a quantity's unit string names for date arithmetic. UCUM
    /// `'a'` and `'mo'` are not calendar units and are refused (N1 §Date/Time
    /// Arithmetic).
    pub fn parse(unit: &str) -> Option<CalendarUnit> {
        Some(match unit {
            "year" | "years" => CalendarUnit::Year,
            "month" | "months" => CalendarUnit::Month,
            "week" | "weeks" | "wk" => CalendarUnit::Week,
            "day" | "days" | "d" => CalendarUnit::Day,
            "hour" | "hours" | "h" => CalendarUnit::Hour,
            "minute" | "minutes" | "min" => CalendarUnit::Minute,
            "second" | "seconds" | "s" => CalendarUnit::Second,
            "millisecond" | "milliseconds" | "ms" => CalendarUnit::Millisecond,
            _ => return None,
        })
    }
}

impl fmt::Display for Temporal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.precision;
        if self.kind != TemporalKind::Time {
            write!(f, "{:04}", self.year)?;
            if p >= Precision::Month {
                write!(f, "-{:02}", self.month)?;
            }
            if p >= Precision::Day {
                write!(f, "-{:02}", self.day)?;
            }
            if self.kind == TemporalKind::Date || p < Precision::Hour {
                return Ok(());
            }
            f.write_char('T')?;
        }
        write!(f, "{:02}", self.hour)?;
        if p >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if p >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if p >= Precision::Fraction && self.frac_digits > 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", &frac[..self.frac_digits as usize])?;
        }
        match self.tz {
            Some(0) => f.write_char('Z'),
            Some(off) => {
                let sign = if off < 0 { '-' } else { '+' };
                write!(f, "{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    fn dt(s: &str) -> Temporal {
        Temporal::parse_datetime(s).unwrap()
    }

    #[test]
    fn parses_and_prints_each_precision() {
        for s in [
            "2014",
            "2014-01",
            "2014-01-25",
            "2014-01-25T14",
            "2014-01-25T14:30",
            "2014-01-25T14:30:14.559+01:00",
            "2014-01-25T14:30:14Z",
        ] {
            assert_eq!(dt(s).to_string(), s);
        }
        assert!(Temporal::parse_date("2014-02-30").is_none());
        assert!(Temporal::parse_date("2014-13").is_none());
        assert_eq!(Temporal::parse_time("14:30:00.5").unwrap().to_string(), "14:30:00.5");
    }

    #[test]
    fn comparison_respects_precision_and_zones() {
        assert_eq!(dt("2014").compare(&dt("2015-06")), Some(Less));
        assert_eq!(dt("2014").compare(&dt("2014-06")), None);
        assert_eq!(dt("2014-01-01T10:00:00Z").compare(&dt("2014-01-01T11:00:00+01:00")), Some(Equal));
        assert_eq!(dt("2014-01-01T10:00:00").compare(&dt("2014-01-01T10:00:00.000")), Some(Equal));
        assert_eq!(dt("2014-01-01T10:00:00Z").compare(&dt("2014-01-01T10:00:00")), None);
    }

    #[test]
    fn arithmetic_clamps_and_truncates() {
        assert_eq!(dt("2014-01-31").add(1, CalendarUnit::Month).unwrap().to_string(), "2014-02-28");
        assert_eq!(dt("2014").add(25, CalendarUnit::Month).unwrap().to_string(), "2016");
        assert_eq!(dt("2014-12-31T23:00").add(2, CalendarUnit::Hour).unwrap().to_string(), "2015-01-01T01:00");
        assert_eq!(dt("2016-03-01").add(-1, CalendarUnit::Day).unwrap().to_string(), "2016-02-29");
    }
}
