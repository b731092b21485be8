//! Validation of incoming JSON readings into [`Reading`]s, with a reason for every rejection.
//!
//! Accepts the prototype's fields (see DESIGN.md "Readings"). Unknown fields are ignored so
//! producers can add fields without breaking ingestion. This is on the hot path of `backtest`
//! and ingestion, so it borrows from the input and parses timestamps by hand.

use super::{Body, Connectivity, DeviceTelemetry, EpochMs, Glucose, Reading};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Upper bound on one reading's JSON size; larger payloads are dead-lettered unparsed.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// mg/dL per mmol/L of glucose (molar mass 180.16 g/mol).
pub const MG_DL_PER_MMOL_L: f64 = 18.0182;
/// Physically plausible glucose range in mg/dL; outside it a value is an error, not a reading.
pub const GLUCOSE_RANGE_MG_DL: (f64, f64) = (10.0, 1500.0);
const MAX_TEXT_LEN: usize = 128;
const MAX_ERROR_CODES: usize = 32;

/// Why a payload was rejected. The text is what lands in the dead-letter store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// An identifier that producers send either as a JSON string or as an integer.
#[derive(Debug)]
enum IdValue<'a> {
    Int(u64),
    Neg(i64),
    Text(Cow<'a, str>),
    Float,
}

impl<'de: 'a, 'a> Deserialize<'de> for IdValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IdValue::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if v >= 0 {
                    IdValue::Int(v as u64)
                } else {
                    IdValue::Neg(v)
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok({
                    let _ = v;
                    IdValue::Float
                })
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdValue::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdValue::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON number, or anything else (kept so the error can say what was sent).
#[derive(Debug)]
enum NumberValue {
    Num(f64),
    NotANumber(&'static str),
}

impl<'de> Deserialize<'de> for NumberValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NumberValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(NumberValue::Num(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(NumberValue::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(NumberValue::Num(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NumberValue::NotANumber("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NumberValue::NotANumber("a boolean"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(NumberValue::NotANumber("an array"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(NumberValue::NotANumber("an object"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NumberValue::NotANumber("null"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Error codes come as a list of strings, or (in older firmware) one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorCodes<'a> {
    List(Vec<Cow<'a, str>>),
    #[serde(borrow)]
    Joined(Cow<'a, str>),
}

#[derive(Debug, Deserialize)]
struct RawReading<'a> {
    #[serde(borrow, default)]
    reading_id: Option<IdValue<'a>>,
    #[serde(borrow, default)]
    patient_id: Option<IdValue<'a>>,
    #[serde(borrow, default)]
    device_id: Option<IdValue<'a>>,
    #[serde(default)]
    glucose_level: Option<NumberValue>,
    #[serde(borrow, default)]
    unit: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    location: Option<Cow<'a, str>>,
    #[serde(default)]
    battery_level: Option<NumberValue>,
    #[serde(borrow, default)]
    firmware_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    connectivity_status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error_codes: Option<ErrorCodes<'a>>,
}

/// Parses and validates one JSON reading.
pub fn parse_reading(payload: &[u8]) -> Result<Reading, Invalid> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(invalid(format!(
            "payload of {} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes",
            payload.len()
        )));
    }
    let raw: RawReading<'_> =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    validate(raw)
}

fn validate(raw: RawReading<'_>) -> Result<Reading, Invalid> {
    let ts = raw
        .timestamp
        .as_deref()
        .ok_or_else(|| invalid("missing field `timestamp`"))?;
    let at_ms = parse_timestamp(ts)?;
    let device_id = id_field("device_id", raw.device_id.as_ref())?;
    let body = if let Some(level) = &raw.glucose_level {
        let patient_id = id_field("patient_id", raw.patient_id.as_ref())?;
        let value = match level {
            NumberValue::Num(v) => *v,
            NumberValue::NotANumber(what) => {
                return Err(invalid(format!(
                    "`glucose_level` must be a number, got {what}"
                )));
            }
        };
        let mg_dl = match raw.unit.as_deref().map(str::trim) {
            None => value,
            Some(u) if u.eq_ignore_ascii_case("mg/dl") => value,
            Some(u) if u.eq_ignore_ascii_case("mmol/l") => value * MG_DL_PER_MMOL_L,
            Some(u) => {
                return Err(invalid(format!(
                    "unknown `unit` {u:?}: expected \"mg/dL\" or \"mmol/L\""
                )));
            }
        };
        let (lo, hi) = GLUCOSE_RANGE_MG_DL;
        if !(lo..=hi).contains(&mg_dl) {
            return Err(invalid(format!(
                "`glucose_level` out of the plausible range {lo}..={hi} mg/dL"
            )));
        }
        Body::Glucose(Glucose {
            patient_id,
            device_id,
            mg_dl,
            location: bounded_text("location", raw.location)?,
        })
    } else if raw.battery_level.is_some()
        || raw.connectivity_status.is_some()
        || raw.firmware_version.is_some()
        || raw.error_codes.is_some()
    {
        let battery_pct = match &raw.battery_level {
            None => None,
            Some(NumberValue::Num(v)) if (0.0..=100.0).contains(v) => Some(*v),
            Some(NumberValue::Num(_)) => {
                return Err(invalid("`battery_level` must be within 0..=100 percent"));
            }
            Some(NumberValue::NotANumber(what)) => {
                return Err(invalid(format!(
                    "`battery_level` must be a number, got {what}"
                )));
            }
        };
        let connectivity = match raw.connectivity_status.as_deref() {
            None => Connectivity::Unknown,
            Some(s) => Connectivity::parse(s).ok_or_else(|| {
                invalid(format!(
                    "unknown `connectivity_status` {s:?}: expected Connected, Poor Connection or Disconnected"
                ))
            })?,
        };
        let error_codes: Vec<String> = match raw.error_codes {
            None => Vec::new(),
            Some(ErrorCodes::List(v)) => v
                .iter()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
            Some(ErrorCodes::Joined(s)) => s
                .split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
        };
        if error_codes.len() > MAX_ERROR_CODES || error_codes.iter().any(|c| c.len() > MAX_TEXT_LEN)
        {
            return Err(invalid(format!(
                "`error_codes` exceeds {MAX_ERROR_CODES} codes of at most {MAX_TEXT_LEN} characters"
            )));
        }
        Body::Device(DeviceTelemetry {
            device_id,
            battery_pct,
            firmware_version: bounded_text("firmware_version", raw.firmware_version)?,
            connectivity,
            error_codes,
        })
    } else {
        return Err(invalid(
            "neither a glucose reading (needs `glucose_level`) nor device telemetry \
             (needs one of `battery_level`, `connectivity_status`, `firmware_version`, `error_codes`)",
        ));
    };
    // A producer's id is scoped by stream and device, so two devices (or vendors) that
    // number their readings alike never collide: `g:<device>:<id>` / `d:<device>:<id>`.
    let scope = |given: &str| {
        let kind = match body {
            Body::Glucose(_) => 'g',
            Body::Device(_) => 'd',
        };
        format!("{kind}:{device_id}:{given}")
    };
    let id = match raw.reading_id {
        None => derive_reading_id(at_ms, &body),
        Some(IdValue::Int(v)) => scope(&v.to_string()),
        Some(IdValue::Neg(v)) => scope(&v.to_string()),
        Some(IdValue::Text(s)) => {
            let s = s.trim();
            if s.is_empty() || s.len() > MAX_TEXT_LEN {
                return Err(invalid(format!(
                    "`reading_id` must be 1..={MAX_TEXT_LEN} characters"
                )));
            }
            scope(s)
        }
        Some(IdValue::Float) => return Err(invalid("`reading_id` must be a string or an integer")),
    };
    Ok(Reading { id, at_ms, body })
}

/// Largest patient or device id: the stores keep ids as signed 64-bit integers.
pub const MAX_ID: u64 = i64::MAX as u64;

fn id_field(name: &str, v: Option<&IdValue<'_>>) -> Result<u64, Invalid> {
    let in_range = |v: u64| {
        if v <= MAX_ID {
            Ok(v)
        } else {
            Err(invalid(format!(
                "`{name}` {v} exceeds the largest id {MAX_ID}"
            )))
        }
    };
    match v {
        None => Err(invalid(format!("missing field `{name}`"))),
        Some(IdValue::Int(v)) => in_range(*v),
        Some(IdValue::Text(s)) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| {
                invalid(format!(
                    "`{name}` must be a non-negative integer, got a non-numeric string"
                ))
            })
            .and_then(in_range),
        Some(IdValue::Neg(_)) | Some(IdValue::Float) => {
            Err(invalid(format!("`{name}` must be a non-negative integer")))
        }
    }
}

fn bounded_text(name: &str, v: Option<Cow<'_, str>>) -> Result<Option<String>, Invalid> {
    match v {
        Some(s) if s.len() > MAX_TEXT_LEN => Err(invalid(format!(
            "`{name}` longer than {MAX_TEXT_LEN} characters"
        ))),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => Ok(Some(s.trim().to_owned())),
        None => Ok(None),
    }
}

/// The producer's `reading_id` as it was sent, from a scoped reading id (`g:<device>:<id>`);
/// a derived id (`h-…`) is returned as it is.
pub fn given_reading_id(id: &str) -> &str {
    match id.as_bytes() {
        [b'g' | b'd', b':', ..] => id[2..].split_once(':').map_or(id, |(_, given)| given),
        _ => id,
    }
}

/// Stable id from the content: the same reading sent twice gets the same id.
fn derive_reading_id(at_ms: EpochMs, body: &Body) -> String {
    let mut h = Sha256::new();
    h.update(at_ms.to_le_bytes());
    match body {
        Body::Glucose(g) => {
            h.update(b"g");
            h.update(g.patient_id.to_le_bytes());
            h.update(g.device_id.to_le_bytes());
            h.update(g.mg_dl.to_bits().to_le_bytes());
        }
        Body::Device(d) => {
            h.update(b"d");
            h.update(d.device_id.to_le_bytes());
            h.update(
                d.battery_pct
                    .map(f64::to_bits)
                    .unwrap_or(u64::MAX)
                    .to_le_bytes(),
            );
            h.update(d.connectivity.as_str().as_bytes());
            h.update(d.firmware_version.as_deref().unwrap_or("").as_bytes());
            for c in &d.error_codes {
                h.update(c.as_bytes());
                h.update([0u8]);
            }
        }
    }
    format!("h-{}", hex::encode(&h.finalize()[..12]))
}

/// Parses RFC 3339 (`2026-11-28T10:05:00Z`, `…+01:00`, fractional seconds) or the prototype's
/// `YYYY-MM-DD HH:MM:SS` (UTC) into epoch milliseconds.
pub fn parse_timestamp(s: &str) -> Result<EpochMs, Invalid> {
    let bad = || {
        invalid(format!(
            "`timestamp` {s:?} is neither RFC 3339 nor `YYYY-MM-DD HH:MM:SS` (UTC)"
        ))
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, Invalid> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return Err(bad());
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(invalid(format!(
            "`timestamp` {s:?} is not a valid date and time"
        )));
    }
    let rest = &b[19..];
    let (millis, tz) = match b[10] {
        b'T' | b't' => {
            let mut i = 0;
            let mut millis = 0i64;
            if rest.first() == Some(&b'.') {
                i = 1;
                let mut digits = 0;
                while i < rest.len() && rest[i].is_ascii_digit() {
                    if digits < 3 {
                        millis = millis * 10 + i64::from(rest[i] - b'0');
                    }
                    digits += 1;
                    i += 1;
                }
                if digits == 0 {
                    return Err(bad());
                }
                for _ in digits..3 {
                    millis *= 10;
                }
            }
            let tz = match &rest[i..] {
                [b'Z'] | [b'z'] => 0,
                [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                    let digits = [*h1, *h2, *m1, *m2];
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return Err(bad());
                    }
                    let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                    let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                    if h > 23 || m > 59 {
                        return Err(bad());
                    }
                    let off = (h * 60 + m) * 60_000;
                    if *sign == b'+' { off } else { -off }
                }
                _ => return Err(bad()),
            };
            (millis, tz)
        }
        b' ' if rest.is_empty() => (0, 0),
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59);
    Ok(secs * 1000 + millis - tz)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn timestamps_match_chrono() {
        for s in [
            "2026-11-28T10:05:00Z",
            "2024-02-29T23:59:59.999Z",
            "1999-12-31T23:00:00+01:30",
            "2026-03-01T00:00:00.5-05:00",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(s).unwrap(), chrono_ms(s), "{s}");
        }
        assert_eq!(
            parse_timestamp("2026-11-28 10:05:00").unwrap(),
            chrono_ms("2026-11-28T10:05:00Z")
        );
    }

    #[test]
    fn timestamps_rejected() {
        for s in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-28",
            "2026-11-28T10:05:00",
            "yesterday",
            "2026-11-28 10:05:00Z",
        ] {
            assert!(parse_timestamp(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn producer_ids_are_scoped_by_stream_and_device_and_ids_fit_the_stores() {
        let g = |device: &str, id: &str| {
            parse_reading(format!(r#"{{"reading_id":"{id}","patient_id":1,"device_id":{device},"glucose_level":100,"timestamp":"2026-11-28 10:00:00"}}"#).as_bytes()).unwrap().id
        };
        assert_ne!(
            g("1", "5"),
            g("2", "5"),
            "two devices, one producer id: two readings"
        );
        assert_eq!(g("1", "a:b"), "g:1:a:b");
        assert_eq!(given_reading_id(&g("1", "a:b")), "a:b");
        let d = parse_reading(br#"{"reading_id":"5","device_id":1,"battery_level":50,"timestamp":"2026-11-28 10:00:00"}"#).unwrap();
        assert_eq!(d.id, "d:1:5", "telemetry ids are their own stream");
        let derived = parse_reading(br#"{"patient_id":1,"device_id":1,"glucose_level":100,"timestamp":"2026-11-28 10:00:00"}"#).unwrap();
        assert!(derived.id.starts_with("h-"));
        assert_eq!(given_reading_id(&derived.id), derived.id);
        for (patient, device) in [("9223372036854775808", "1"), ("1", "18446744073709551615")] {
            let field = if patient == "1" {
                "device_id"
            } else {
                "patient_id"
            };
            let json = format!(
                r#"{{"patient_id":{patient},"device_id":{device},"glucose_level":100,"timestamp":"2026-11-28 10:00:00"}}"#
            );
            let err = parse_reading(json.as_bytes()).unwrap_err();
            assert!(err.0.contains("exceeds the largest id"), "{field}: {err}");
        }
        let max = format!(
            r#"{{"patient_id":{MAX_ID},"device_id":1,"glucose_level":100,"timestamp":"2026-11-28 10:00:00"}}"#
        );
        assert!(
            parse_reading(max.as_bytes()).is_ok(),
            "i64::MAX itself fits"
        );
    }

    #[test]
    fn glucose_reading_parses_with_both_id_forms() {
        let r = parse_reading(br#"{"reading_id":42,"patient_id":7,"device_id":"9","glucose_level":120.5,"timestamp":"2026-11-28 10:00:00","location":"home"}"#).unwrap();
        assert_eq!(r.id, "g:9:42", "scoped by stream and device");
        assert_eq!(given_reading_id(&r.id), "42");
        assert_eq!(
            r.body,
            Body::Glucose(Glucose {
                patient_id: 7,
                device_id: 9,
                mg_dl: 120.5,
                location: Some("home".into())
            })
        );
        let r = parse_reading(br#"{"reading_id":"abc","patient_id":7,"device_id":9,"glucose_level":6.5,"unit":"mmol/L","timestamp":"2026-11-28T10:00:00Z"}"#).unwrap();
        assert_eq!(r.id, "g:9:abc");
        let Body::Glucose(g) = r.body else {
            panic!("not glucose")
        };
        assert!((g.mg_dl - 6.5 * MG_DL_PER_MMOL_L).abs() < 1e-9);
    }

    #[test]
    fn derived_ids_are_stable_and_content_based() {
        let a = parse_reading(br#"{"patient_id":7,"device_id":9,"glucose_level":120,"timestamp":"2026-11-28T10:00:00Z"}"#).unwrap();
        let b = parse_reading(br#"{"timestamp":"2026-11-28 10:00:00","glucose_level":120.0,"device_id":9,"patient_id":7,"location":"x"}"#).unwrap();
        let c = parse_reading(br#"{"patient_id":7,"device_id":9,"glucose_level":121,"timestamp":"2026-11-28T10:00:00Z"}"#).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert!(a.id.starts_with("h-"));
    }

    #[test]
    fn device_telemetry_parses() {
        let r = parse_reading(br#"{"device_id":3,"timestamp":"2026-11-28T10:00:00Z","battery_level":55,"firmware_version":"1.2.3","connectivity_status":"Poor Connection","error_codes":"E1, E2"}"#).unwrap();
        let Body::Device(d) = r.body else {
            panic!("not device")
        };
        assert_eq!(d.connectivity, Connectivity::Poor);
        assert_eq!(d.error_codes, vec!["E1", "E2"]);
        assert_eq!(d.battery_pct, Some(55.0));
    }

    #[test]
    fn invalid_inputs_have_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "malformed JSON"),
            (br#"{"patient_id":1,"device_id":1,"glucose_level":100}"#, "missing field `timestamp`"),
            (br#"{"device_id":1,"glucose_level":100,"timestamp":"2026-11-28T10:00:00Z"}"#, "missing field `patient_id`"),
            (br#"{"patient_id":1,"device_id":1,"glucose_level":"high","timestamp":"2026-11-28T10:00:00Z"}"#, "must be a number, got a string"),
            (br#"{"patient_id":1,"device_id":1,"glucose_level":-5,"timestamp":"2026-11-28T10:00:00Z"}"#, "plausible range"),
            (br#"{"patient_id":-1,"device_id":1,"glucose_level":100,"timestamp":"2026-11-28T10:00:00Z"}"#, "non-negative integer"),
            (br#"{"patient_id":1,"device_id":1,"glucose_level":100,"timestamp":"2026-11-28T10:00:00Z","unit":"g/L"}"#, "unknown `unit`"),
            (br#"{"device_id":1,"timestamp":"2026-11-28T10:00:00Z","battery_level":140}"#, "battery_level"),
            (br#"{"device_id":1,"timestamp":"2026-11-28T10:00:00Z","connectivity_status":"Maybe"}"#, "connectivity_status"),
            (br#"{"device_id":1,"timestamp":"2026-11-28T10:00:00Z"}"#, "neither a glucose reading"),
        ];
        for (payload, expected) in cases {
            let err = parse_reading(payload).expect_err(std::str::from_utf8(payload).unwrap());
            assert!(
                err.0.contains(expected),
                "{:?}: got {:?}",
                std::str::from_utf8(payload),
                err.0
            );
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(
            parse_reading(&big)
                .unwrap_err()
                .0
                .contains("exceeds the limit")
        );
    }
}
