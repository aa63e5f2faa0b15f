//! Timestamps as upstream sends them → epoch milliseconds.
//!
//! Accepted: epoch seconds (integer or float with millisecond precision), epoch
//! milliseconds, numeric strings of either, and ISO-8601 / RFC 3339 strings (an offset, `Z`,
//! or none, which is read as UTC). Numbers are told apart by magnitude: below 10^11 they are
//! seconds (10^11 s is the year 5138), from 10^11 on milliseconds (10^11 ms is 1973).

use chrono::{DateTime, NaiveDateTime};

use super::raw::{Field, Scalar};

/// 2000-01-01T00:00:00Z: anything earlier is implausible for a proctoring event.
pub const EARLIEST_PLAUSIBLE_MS: i64 = 946_684_800_000;
/// How far ahead of the processing clock an incident time may be.
pub const MAX_AHEAD_MS: i64 = 24 * 60 * 60 * 1000;
/// Numbers from here on are milliseconds; below, seconds.
const MILLIS_THRESHOLD: f64 = 1e11;

/// Reads a timestamp field to epoch milliseconds. The error says what was wrong.
pub fn read_millis<T>(field: &Field<'_, T>) -> Result<i64, String> {
    match field {
        Field::Scalar(Scalar::Int(n)) => from_number(*n as f64),
        Field::Scalar(Scalar::UInt(n)) => from_number(*n as f64),
        Field::Scalar(Scalar::Float(n)) => from_number(*n),
        Field::Scalar(Scalar::Str(text)) => from_text(text),
        other => Err(format!("is {}; expected epoch seconds, milliseconds or an ISO-8601 string", other.type_name())),
    }
}

/// Checks that a time is plausible for an incident processed at `now_ms`.
pub fn check_plausible(millis: i64, now_ms: i64) -> Result<i64, String> {
    if millis < EARLIEST_PLAUSIBLE_MS {
        return Err(format!("{} is before 2000-01-01", render(millis)));
    }
    if millis > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(format!("{} is more than a day after the processing time {}", render(millis), render(now_ms)));
    }
    Ok(millis)
}

fn render(millis: i64) -> String {
    match DateTime::from_timestamp_millis(millis) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{millis} ms"),
    }
}

fn from_number(value: f64) -> Result<i64, String> {
    if !value.is_finite() {
        return Err("is not a finite number".into());
    }
    let millis = if value.abs() >= MILLIS_THRESHOLD { value } else { value * 1000.0 };
    let millis = millis.round();
    // i64 holds ±292 million years of milliseconds; anything beyond is implausible anyway.
    if millis.abs() >= 9.0e18 {
        return Err(format!("{value:e} is out of range"));
    }
    Ok(millis as i64)
}

fn from_text(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("is an empty string".into());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+') {
        return match trimmed.parse::<f64>() {
            Ok(value) => from_number(value),
            Err(_) => Err(format!("{} is not a number", super::reject::excerpt(text))),
        };
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.timestamp_millis());
    }
    const WITH_OFFSET: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];
    for format in WITH_OFFSET {
        if let Ok(time) = DateTime::parse_from_str(trimmed, format) {
            return Ok(time.timestamp_millis());
        }
    }
    const NAIVE: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
    for format in NAIVE {
        if let Ok(time) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(time.and_utc().timestamp_millis());
        }
    }
    Err(format!("{} is not a timestamp", super::reject::excerpt(text)))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::decode::raw::Skip;

    fn field(json: &str) -> Field<'_, Skip> {
        serde_json::from_str(json).expect(json)
    }

    const T: i64 = 1_767_261_300_123; // 2026-01-01T09:55:00.123Z

    #[test]
    fn every_upstream_spelling_reads_to_the_same_millisecond() {
        let cases = [
            ("1767261300123", T),
            ("1767261300.123", T),
            ("1767261300", T - 123),
            ("\"1767261300123\"", T),
            ("\"1767261300.123\"", T),
            ("\"2026-01-01T09:55:00.123Z\"", T),
            ("\"2026-01-01T10:55:00.123+01:00\"", T),
            ("\"2026-01-01T09:55:00.123+00:00\"", T),
            ("\"2026-01-01T09:55:00.123\"", T),
            ("\"2026-01-01 09:55:00.123\"", T),
            ("\"2026-01-01T09:55:00.123+0000\"", T),
            ("\" 2026-01-01T09:55:00.123Z \"", T),
        ];
        for (json, expected) in cases {
            assert_eq!(read_millis(&field(json)), Ok(expected), "{json}");
        }
    }

    #[test]
    fn unreadable_times_say_why() {
        let cases = [
            ("true", "a boolean"),
            ("[1]", "an array"),
            ("{\"t\":1}", "an object"),
            ("\"\"", "empty"),
            ("\"yesterday\"", "not a timestamp"),
            ("\"2026-13-01T00:00:00Z\"", "not a timestamp"),
            ("\"1.2.3\"", "not a number"),
            ("1e300", "out of range"),
        ];
        for (json, needle) in cases {
            let error = read_millis(&field(json)).expect_err(json);
            assert!(error.contains(needle), "{json}: {error}");
        }
    }

    #[test]
    fn plausibility_is_2000_to_a_day_ahead_of_now() {
        let now = T;
        assert_eq!(check_plausible(EARLIEST_PLAUSIBLE_MS, now), Ok(EARLIEST_PLAUSIBLE_MS));
        assert!(check_plausible(EARLIEST_PLAUSIBLE_MS - 1, now).unwrap_err().contains("before 2000"));
        assert!(check_plausible(0, now).is_err());
        assert!(check_plausible(-5, now).is_err());
        assert_eq!(check_plausible(now + MAX_AHEAD_MS, now), Ok(now + MAX_AHEAD_MS));
        assert!(check_plausible(now + MAX_AHEAD_MS + 1, now).unwrap_err().contains("more than a day"));
    }

    #[test]
    fn owned_strings_read_too() {
        let value: Field<'_, Skip> = Field::Scalar(Scalar::Str(Cow::Owned("1767261300".into())));
        assert_eq!(read_millis(&value), Ok(T - 123));
    }
}
