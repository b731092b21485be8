//! Small helpers for the simulator's internal clock: whole seconds since the Unix epoch, UTC, treated as patients' local time.

use chrono::{DateTime, Utc};

pub(crate) const MINUTE: i64 = 60;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86_400;

/// Converts internal seconds to a `DateTime<Utc>`; out-of-range values saturate to the epoch (never happens for sane configs).
pub(crate) fn to_datetime(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The day number (days since 1970-01-01) that contains `t`.
pub(crate) fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

/// Seconds since midnight of `t`'s day.
pub(crate) fn second_of_day(t: i64) -> i64 {
    t.rem_euclid(DAY)
}

/// Hours since midnight as a float, for smooth daily shapes.
pub(crate) fn hour_of_day(t: i64) -> f64 {
    second_of_day(t) as f64 / HOUR as f64
}

/// Day of week for a day number, Monday = 0 … Sunday = 6 (1970-01-01 was a Thursday).
pub(crate) fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

    #[test]
    fn weekday_matches_chrono() {
        for d in [0_i64, 1, 2, 20_000, 20_454, 20_455] {
            let dt = Utc.timestamp_opt(d * DAY, 0).unwrap();
            assert_eq!(weekday(d), dt.weekday().num_days_from_monday(), "day {d}");
        }
    }

    #[test]
    fn day_and_hour() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 28, 10, 30, 0)
            .unwrap()
            .timestamp();
        assert_eq!(second_of_day(t), 10 * HOUR + 30 * MINUTE);
        assert!((hour_of_day(t) - 10.5).abs() < 1e-9);
        assert_eq!(day_of(t) * DAY + second_of_day(t), t);
    }
}
