//! Human-friendly durations for the CLI and scenario options: `14d`, `36h`, `2h30m`, `90s`, `1w`.

use chrono::Duration;

use crate::config::ParseError;

/// Parses a duration made of `<number><unit>` parts, units `w`, `d`, `h`, `m`, `s` (e.g. `14d`, `2h30m`, `90s`).
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: i64 = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(err()),
        };
        let n: i64 = number.parse().map_err(|_| err())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if !number.is_empty() {
        return Err(err());
    }
    Ok(Duration::seconds(total))
}

/// Formats a duration in the same notation, largest units first (`1d2h`, `90s` → `1m30s`, zero → `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.num_seconds();
    if secs <= 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(name);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("14d").unwrap(), Duration::days(14));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::minutes(150));
        assert_eq!(parse_duration("1w").unwrap(), Duration::days(7));
        assert_eq!(parse_duration("90s").unwrap(), Duration::seconds(90));
        for bad in ["", "14", "d", "3x", "1.5h", "-2h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::minutes(90)), "1h30m");
        assert_eq!(format_duration(Duration::days(14)), "14d");
        assert_eq!(format_duration(Duration::seconds(0)), "0s");
        let d = parse_duration("1d2h3m4s").unwrap();
        assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }
}
