//! Lifetimes of share links as people type them (`72h`).

use std::time::Duration;

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
