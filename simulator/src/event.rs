//! The events the simulator emits — glucose readings and device telemetry — and their JSON-lines wire format.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A glucose measurement. Serialises to exactly
/// `{"reading_id","patient_id","device_id","glucose_level","timestamp","location"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlucoseReading {
    /// Deterministic id, `g-<patient>-<seq>` with `seq` counting the patient's readings in event-time order.
    pub reading_id: String,
    /// The patient wearing the device.
    pub patient_id: u64,
    /// The device that measured it.
    pub device_id: u64,
    /// mg/dL, rounded to one decimal.
    pub glucose_level: f64,
    /// Event time (when the glucose was measured), RFC 3339 UTC with whole seconds.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Where the patient was: `home`, `work`, `gym` or `out`.
    pub location: String,
    /// When the reading leaves the device; later than `timestamp` for readings uploaded after a disconnection. Not on the wire.
    #[serde(skip)]
    pub emitted_at: DateTime<Utc>,
}

/// Link state reported by a device's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConnectivityStatus {
    /// Readings flow in real time.
    Connected,
    /// Some readings are lost.
    #[serde(rename = "Poor Connection")]
    PoorConnection,
    /// No readings arrive; they may be uploaded later, after reconnecting.
    Disconnected,
}

impl ConnectivityStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectivityStatus::Connected => "Connected",
            ConnectivityStatus::PoorConnection => "Poor Connection",
            ConnectivityStatus::Disconnected => "Disconnected",
        }
    }
}

/// A device status report. Serialises to exactly
/// `{"reading_id","device_id","timestamp","battery_level","firmware_version","connectivity_status","error_codes"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceTelemetry {
    /// Deterministic id, `d-<device>-<seq>`.
    pub reading_id: String,
    /// The reporting device.
    pub device_id: u64,
    /// Event time, RFC 3339 UTC with whole seconds.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Percent, 0..=100, one decimal.
    pub battery_level: f64,
    /// Firmware running at `timestamp`.
    pub firmware_version: String,
    /// Link state from `timestamp` until the device's next report.
    pub connectivity_status: ConnectivityStatus,
    /// Active error codes, e.g. `E101` (battery low); empty when healthy. See the README for the list.
    pub error_codes: Vec<String>,
    /// The patient the device belongs to (the partition key). Not on the wire.
    #[serde(skip)]
    pub patient_id: u64,
    /// When the report leaves the gateway. Not on the wire.
    #[serde(skip)]
    pub emitted_at: DateTime<Utc>,
}

/// One simulator output: serialises as the bare reading object (no tag), so one event is one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A glucose reading.
    Glucose(GlucoseReading),
    /// Device telemetry.
    Device(DeviceTelemetry),
}

impl Event {
    /// The JSON object on one line, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serialising plain structs of strings, numbers and finite floats cannot fail.
        serde_json::to_string(self).expect("events always serialise")
    }

    /// Writes the JSON object followed by `\n`.
    pub fn write_json_line<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self).map_err(io::Error::other)?;
        out.write_all(b"\n")
    }

    /// When the event leaves the device or gateway; the simulator yields events in non-decreasing emission time.
    pub fn emitted_at(&self) -> DateTime<Utc> {
        match self {
            Event::Glucose(r) => r.emitted_at,
            Event::Device(d) => d.emitted_at,
        }
    }

    /// Event time (the `timestamp` field).
    pub fn timestamp(&self) -> DateTime<Utc> {
        match self {
            Event::Glucose(r) => r.timestamp,
            Event::Device(d) => d.timestamp,
        }
    }

    /// Partition key: the patient id (for telemetry, the patient the device belongs to).
    pub fn partition_key(&self) -> u64 {
        self.patient_id()
    }

    /// The patient this event concerns.
    pub fn patient_id(&self) -> u64 {
        match self {
            Event::Glucose(r) => r.patient_id,
            Event::Device(d) => d.patient_id,
        }
    }

    /// The device that produced the event.
    pub fn device_id(&self) -> u64 {
        match self {
            Event::Glucose(r) => r.device_id,
            Event::Device(d) => d.device_id,
        }
    }

    /// The `reading_id` field.
    pub fn reading_id(&self) -> &str {
        match self {
            Event::Glucose(r) => &r.reading_id,
            Event::Device(d) => &d.reading_id,
        }
    }

    /// True when the event is emitted after its event time (uploaded late, after a reconnection).
    pub fn is_late(&self) -> bool {
        self.emitted_at() > self.timestamp()
    }

    /// The glucose reading, if this is one.
    pub fn as_glucose(&self) -> Option<&GlucoseReading> {
        match self {
            Event::Glucose(r) => Some(r),
            Event::Device(_) => None,
        }
    }

    /// The telemetry report, if this is one.
    pub fn as_device(&self) -> Option<&DeviceTelemetry> {
        match self {
            Event::Device(d) => Some(d),
            Event::Glucose(_) => None,
        }
    }
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Rounds to one decimal, the precision the wire format carries.
pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn exact_wire_format() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 10, 5, 0).unwrap();
        let g = Event::Glucose(GlucoseReading {
            reading_id: "g-3-17".into(),
            patient_id: 3,
            device_id: 100_003,
            glucose_level: 120.0,
            timestamp: t,
            location: "home".into(),
            emitted_at: t,
        });
        assert_eq!(
            g.to_json_line(),
            r#"{"reading_id":"g-3-17","patient_id":3,"device_id":100003,"glucose_level":120.0,"timestamp":"2026-11-28T10:05:00Z","location":"home"}"#
        );
        let d = Event::Device(DeviceTelemetry {
            reading_id: "d-100003-2".into(),
            device_id: 100_003,
            timestamp: t,
            battery_level: 87.5,
            firmware_version: "1.4.2".into(),
            connectivity_status: ConnectivityStatus::PoorConnection,
            error_codes: vec!["E101".into()],
            patient_id: 3,
            emitted_at: t,
        });
        assert_eq!(
            d.to_json_line(),
            r#"{"reading_id":"d-100003-2","device_id":100003,"timestamp":"2026-11-28T10:05:00Z","battery_level":87.5,"firmware_version":"1.4.2","connectivity_status":"Poor Connection","error_codes":["E101"]}"#
        );
        assert_eq!(d.partition_key(), 3);
        let mut buf = Vec::new();
        d.write_json_line(&mut buf).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), d.to_json_line() + "\n");
    }

    #[test]
    fn rounding() {
        assert_eq!(round1(123.449), 123.4);
        assert_eq!(round1(99.95), 100.0);
    }
}
