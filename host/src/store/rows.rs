//! Decoding rows into model types, written once for every engine: each engine implements
//! [`Columns`] for its row type (MySQL reads its binary-collated id columns differently), and
//! the decoders below turn columns into readings, alerts, faults and dead letters.

use super::{AlertStatus, Received, StoreError};
use crate::model::{
    Alert, Body, Connectivity, DeadLetter, DeviceTelemetry, FaultKind, Glucose, Reading,
    ReadingKind, RuleFault, RuleRef, Severity,
};

/// Catch-up pages, identical in both dialects: rows strictly after a (received time, id)
/// cursor. Binds: time, time, id, limit. The first conjunct lets the engine range-scan the
/// (received, id) index; both engines order ids bytewise.
pub const GLUCOSE_SINCE: &str = "SELECT ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, \
     Location, ReceivedAtMs FROM GlucoseReadings \
     WHERE ReceivedAtMs >= ? AND (ReceivedAtMs > ? OR ReadingID > ?) \
     ORDER BY ReceivedAtMs, ReadingID LIMIT ?";
pub const DEVICE_SINCE: &str = "SELECT ReadingID, DeviceID, TimestampMs, BatteryLevel, \
     FirmwareVersion, ConnectivityStatus, ErrorCodes, ReceivedAtMs FROM DeviceOperationalData \
     WHERE ReceivedAtMs >= ? AND (ReceivedAtMs > ? OR ReadingID > ?) \
     ORDER BY ReceivedAtMs, ReadingID LIMIT ?";
pub const ALERTS_SINCE: &str = "SELECT a.AlertID, a.ReadingID, a.PatientID, a.DeviceID, a.Kind, \
     a.RuleName, a.RuleVersion, a.Code, a.Severity, a.Message, a.Value, a.TimestampMs, \
     a.CreatedAtMs, l.Status FROM Alerts a JOIN AlertLifecycle l ON l.AlertID = a.AlertID \
     WHERE a.CreatedAtMs >= ? AND (a.CreatedAtMs > ? OR a.AlertID > ?) \
     ORDER BY a.CreatedAtMs, a.AlertID LIMIT ?";

/// Alerts that were notified (not stored as suppressed) with event time after a bind, oldest
/// first: the suppression state rebuilt on start. Migration 0004 indexes `TimestampMs`.
pub const NOTIFIED_ALERTS_SINCE: &str = "SELECT a.AlertID, a.ReadingID, a.PatientID, a.DeviceID, \
     a.Kind, a.RuleName, a.RuleVersion, a.Code, a.Severity, a.Message, a.Value, a.TimestampMs, \
     a.CreatedAtMs, l.Status FROM Alerts a JOIN AlertLifecycle l ON l.AlertID = a.AlertID \
     WHERE a.TimestampMs > ? AND l.Status <> 'suppressed' ORDER BY a.TimestampMs, a.AlertID";

/// A sink's confirmed cursor, one JSON row per sink.
pub const SINK_CURSOR_SELECT: &str = "SELECT CursorJson FROM SinkCursors WHERE Sink = ?";

pub fn encode_cursor(c: &super::FeedCursor) -> String {
    serde_json::to_string(c).expect("a cursor serialises")
}

pub fn decode_cursor(json: Option<String>) -> Result<Option<super::FeedCursor>, StoreError> {
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("SinkCursors: {e}")))
    })
    .transpose()
}

/// The time before which a diagnostics table's rows go: older than `before_ms`, or at or
/// older than `past`, the time of the row just past the newest ones to keep.
pub fn diagnostics_cut(past: Option<i64>, before_ms: i64) -> i64 {
    past.map_or(before_ms, |t| before_ms.max(t.saturating_add(1)))
}

/// Ids per `IN (…)` list when looking rows up by id.
pub const IDS_PER_LOOKUP: usize = 500;

/// The key that makes a rule fault's insert idempotent: the fault, the batch it came with
/// (its receive time) and its place in that batch, so a retried write stores it once.
pub fn fault_key(f: &RuleFault, received_at_ms: i64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        f.rule.name.as_str(),
        f.rule.version.as_str(),
        f.kind.as_str(),
        f.detail.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.update(f.at_ms.to_le_bytes());
    h.update(received_at_ms.to_le_bytes());
    h.update((index as u64).to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A retention bound: the last row (in (received time, id) order) a downstream copy has
/// confirmed; without one, every row is past it. Rows at or before it may go.
pub fn kept_bound(kept_by: Option<&super::FeedCursor>, kind: ReadingKind) -> super::Cursor {
    match kept_by {
        None => super::Cursor {
            received_at_ms: i64::MAX,
            id: String::new(),
        },
        Some(c) => match kind {
            ReadingKind::Glucose => c.glucose.clone(),
            ReadingKind::Device => c.device.clone(),
        },
    }
}

/// The diagnostics tables and their time column, and the query that finds the time of the
/// row `OFFSET ?` from the newest: rows older than the cut (or than the age bound) go.
pub const DIAGNOSTICS: [(&str, &str); 2] =
    [("DeadLetters", "ReceivedAtMs"), ("RuleFaults", "AtMs")];

pub fn diagnostics_cut_sql(table: &str, time: &str) -> String {
    format!("SELECT {time} FROM {table} ORDER BY {time} DESC LIMIT 1 OFFSET ?")
}

/// Rows one retention statement deletes, so writers wait at most one short delete.
pub const PURGE_CHUNK: u32 = 10_000;

/// Typed access to a row's columns by name.
pub trait Columns {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn float(&self, col: &str) -> Result<f64, StoreError>;
    fn opt_float(&self, col: &str) -> Result<Option<f64>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;

    /// A boolean stored as an integer (both engines).
    fn boolean(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.int(col)? != 0)
    }

    /// A nullable non-negative integer id.
    fn opt_id(&self, col: &str) -> Result<Option<u64>, StoreError> {
        self.opt_int(col)?
            .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}"))))
            .transpose()
    }

    /// A non-negative integer id (stored signed, as both engines' BIGINT).
    fn id(&self, col: &str) -> Result<u64, StoreError> {
        let v = self.int(col)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
    }
}

/// A JSON document stored as text.
pub fn json<T: serde::de::DeserializeOwned>(
    row: &(impl Columns + ?Sized),
    col: &str,
) -> Result<T, StoreError> {
    let text = row.text(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A `GlucoseReadings` row.
pub fn glucose_reading(row: &(impl Columns + ?Sized)) -> Result<Reading, StoreError> {
    Ok(Reading {
        id: row.text("ReadingID")?,
        at_ms: row.int("TimestampMs")?,
        body: Body::Glucose(Glucose {
            patient_id: row.id("PatientID")?,
            device_id: row.id("DeviceID")?,
            mg_dl: row.float("GlucoseLevel")?,
            location: row.opt_text("Location")?,
        }),
    })
}

/// A `DeviceOperationalData` row.
pub fn device_reading(row: &(impl Columns + ?Sized)) -> Result<Reading, StoreError> {
    let codes = row.text("ErrorCodes")?;
    Ok(Reading {
        id: row.text("ReadingID")?,
        at_ms: row.int("TimestampMs")?,
        body: Body::Device(DeviceTelemetry {
            device_id: row.id("DeviceID")?,
            battery_pct: row.opt_float("BatteryLevel")?,
            firmware_version: row.opt_text("FirmwareVersion")?,
            connectivity: Connectivity::parse(&row.text("ConnectivityStatus")?)
                .unwrap_or(Connectivity::Unknown),
            error_codes: codes
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        }),
    })
}

/// An `Alerts` row joined with its `AlertLifecycle` status.
pub fn alert_with_status(
    row: &(impl Columns + ?Sized),
) -> Result<(Alert, AlertStatus), StoreError> {
    let severity = row.text("Severity")?;
    let alert = Alert {
        id: row.text("AlertID")?,
        rule: RuleRef {
            name: row.text("RuleName")?,
            version: row.text("RuleVersion")?,
        },
        reading_id: row.text("ReadingID")?,
        patient_id: row.opt_int("PatientID")?.map(|p| p as u64),
        device_id: row.id("DeviceID")?,
        kind: if row.text("Kind")? == "device" {
            ReadingKind::Device
        } else {
            ReadingKind::Glucose
        },
        at_ms: row.int("TimestampMs")?,
        code: row.text("Code")?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| StoreError::Corrupt(format!("severity {severity}")))?,
        message: row.text("Message")?,
        value: row.opt_float("Value")?,
    };
    let status = match row.text("Status")?.as_str() {
        "open" => AlertStatus::Open,
        "acknowledged" => AlertStatus::Acknowledged,
        "resolved" => AlertStatus::Resolved,
        "suppressed" => AlertStatus::Suppressed,
        other => return Err(StoreError::Corrupt(format!("alert status {other}"))),
    };
    Ok((alert, status))
}

/// A `RuleFaults` row.
pub fn rule_fault(row: &(impl Columns + ?Sized)) -> Result<RuleFault, StoreError> {
    let kind = row.text("Kind")?;
    Ok(RuleFault {
        rule: RuleRef {
            name: row.text("RuleName")?,
            version: row.text("Version")?,
        },
        kind: FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| StoreError::Corrupt(format!("fault kind {kind}")))?,
        detail: row.text("Detail")?,
        at_ms: row.int("AtMs")?,
    })
}

/// A `DeadLetters` row.
pub fn dead_letter(row: &(impl Columns + ?Sized)) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        origin: row.text("Origin")?,
        reason: row.text("Reason")?,
        payload: row.text("Payload")?,
        received_at_ms: row.int("ReceivedAtMs")?,
    })
}

/// A catch-up page row of `kind` with its receive time.
pub fn received_reading(
    row: &(impl Columns + ?Sized),
    kind: ReadingKind,
) -> Result<Received<Reading>, StoreError> {
    Ok(Received {
        item: match kind {
            ReadingKind::Glucose => glucose_reading(row)?,
            ReadingKind::Device => device_reading(row)?,
        },
        received_at_ms: row.int("ReceivedAtMs")?,
    })
}

/// A catch-up page alert with its status and creation time.
pub fn received_alert(
    row: &(impl Columns + ?Sized),
) -> Result<Received<(Alert, AlertStatus)>, StoreError> {
    Ok(Received {
        item: alert_with_status(row)?,
        received_at_ms: row.int("CreatedAtMs")?,
    })
}
