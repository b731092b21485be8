//! The domain types every module shares: readings, alerts, rule descriptions and dead letters.
//!
//! Nothing here knows about wasmtime, SQL or the network; `engine` converts these to and from
//! the WIT types, `store` to and from rows.

pub mod batch;
pub mod dims;
pub mod parse;
pub mod secret;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Milliseconds since the Unix epoch, UTC. Event time unless a field says otherwise.
pub type EpochMs = i64;

/// Which stream a reading belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadingKind {
    Glucose,
    Device,
}

impl ReadingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingKind::Glucose => "glucose",
            ReadingKind::Device => "device",
        }
    }
}

/// Device connectivity as the prototype reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Connectivity {
    Connected,
    Poor,
    Disconnected,
    Unknown,
}

impl Connectivity {
    /// The prototype's spelling, used in stores and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Connectivity::Connected => "Connected",
            Connectivity::Poor => "Poor Connection",
            Connectivity::Disconnected => "Disconnected",
            Connectivity::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "connected" => Some(Connectivity::Connected),
            "poor connection" | "poor" => Some(Connectivity::Poor),
            "disconnected" => Some(Connectivity::Disconnected),
            "unknown" => Some(Connectivity::Unknown),
            _ => None,
        }
    }
}

/// A validated glucose reading, always in mg/dL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Glucose {
    pub patient_id: u64,
    pub device_id: u64,
    pub mg_dl: f64,
    pub location: Option<String>,
}

/// Validated device telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTelemetry {
    pub device_id: u64,
    pub battery_pct: Option<f64>,
    pub firmware_version: Option<String>,
    pub connectivity: Connectivity,
    pub error_codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Glucose(Glucose),
    Device(DeviceTelemetry),
}

/// One validated reading. `id` is the producer's `reading_id` when given, else derived
/// from the content so that the same reading sent twice collapses to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub id: String,
    pub at_ms: EpochMs,
    pub body: Body,
}

impl Reading {
    pub fn kind(&self) -> ReadingKind {
        match self.body {
            Body::Glucose(_) => ReadingKind::Glucose,
            Body::Device(_) => ReadingKind::Device,
        }
    }

    /// The key windows are kept under: the patient for glucose, the device for telemetry.
    pub fn subject(&self) -> SubjectKey {
        match &self.body {
            Body::Glucose(g) => SubjectKey {
                kind: ReadingKind::Glucose,
                id: g.patient_id,
            },
            Body::Device(d) => SubjectKey {
                kind: ReadingKind::Device,
                id: d.device_id,
            },
        }
    }

    /// The value windows aggregate: mg/dL for glucose, battery percent for telemetry.
    pub fn window_value(&self) -> Option<f64> {
        match &self.body {
            Body::Glucose(g) => Some(g.mg_dl),
            Body::Device(d) => d.battery_pct,
        }
    }

    /// The patient an alert on this reading concerns, when known from the reading itself.
    pub fn patient_id(&self) -> Option<u64> {
        match &self.body {
            Body::Glucose(g) => Some(g.patient_id),
            Body::Device(_) => None,
        }
    }

    pub fn device_id(&self) -> u64 {
        match &self.body {
            Body::Glucose(g) => g.device_id,
            Body::Device(d) => d.device_id,
        }
    }

    /// Whether `other` (with the same id) carries the same reading: same time, subject and
    /// measured values. A producer that sends one id with other content has a conflict.
    pub fn same_content(&self, other: &Reading) -> bool {
        self.at_ms == other.at_ms
            && match (&self.body, &other.body) {
                (Body::Glucose(a), Body::Glucose(b)) => {
                    a.patient_id == b.patient_id
                        && a.device_id == b.device_id
                        && a.mg_dl.to_bits() == b.mg_dl.to_bits()
                }
                (Body::Device(a), Body::Device(b)) => {
                    a.device_id == b.device_id
                        && a.battery_pct.map(f64::to_bits) == b.battery_pct.map(f64::to_bits)
                        && a.connectivity == b.connectivity
                        && a.firmware_version == b.firmware_version
                        && a.error_codes.join(",") == b.error_codes.join(",")
                }
                _ => false,
            }
    }
}

/// The subjects a scoped rule evaluates, resolved from its scope against the directory: the
/// patients' glucose readings and their devices' telemetry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeMembers {
    pub patients: std::collections::HashSet<u64>,
    pub devices: std::collections::HashSet<u64>,
}

impl ScopeMembers {
    pub fn admits(&self, reading: &Reading) -> bool {
        match &reading.body {
            Body::Glucose(g) => self.patients.contains(&g.patient_id),
            Body::Device(d) => self.devices.contains(&d.device_id),
        }
    }
}

/// Whose history a reading belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectKey {
    pub kind: ReadingKind,
    pub id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Identifies one version of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    pub name: String,
    pub version: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// An alert raised by a rule on a reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Derived from (rule, rule version, reading id, code) and the reading's time: a replay
    /// yields the same id.
    pub id: String,
    pub rule: RuleRef,
    pub reading_id: String,
    pub patient_id: Option<u64>,
    pub device_id: u64,
    pub kind: ReadingKind,
    pub at_ms: EpochMs,
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub value: Option<f64>,
}

impl Alert {
    /// The deterministic alert id: the reading's event time (12 hex digits of epoch ms) then
    /// 20 hex digits of SHA-256 over rule name, version, reading id and code. A replayed
    /// reading yields the same id; the time prefix makes ids sort by time, so stores append
    /// instead of inserting at random B-tree positions.
    pub fn derive_id(rule: &RuleRef, reading_id: &str, code: &str, at_ms: EpochMs) -> String {
        let mut h = Sha256::new();
        for part in [rule.name.as_str(), rule.version.as_str(), reading_id, code] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        format!(
            "{:012x}{}",
            at_ms.clamp(0, 0xffff_ffff_ffff),
            hex::encode(&h.finalize()[..10])
        )
    }
}

/// Parameter types a rule may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Float,
    Integer,
    Boolean,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Boolean(bool),
    Integer(i64),
    Float(f64),
}

impl ParamValue {
    pub fn as_f64(self) -> Option<f64> {
        match self {
            ParamValue::Float(v) => Some(v),
            ParamValue::Integer(v) => Some(v as f64),
            ParamValue::Boolean(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Integer(v) => write!(f, "{v}"),
            ParamValue::Boolean(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: ParamValue,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub name: String,
    pub duration_secs: u32,
}

/// What a rule declares about itself (WIT `rule-info`), validated by the engine at load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub kinds: Vec<ReadingKind>,
    pub windows: Vec<WindowSpec>,
    pub params: Vec<ParamSpec>,
}

impl RuleInfo {
    pub fn rule_ref(&self) -> RuleRef {
        RuleRef {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    /// The longest window, in milliseconds; 0 when the rule declares none.
    pub fn lookback_ms(&self) -> i64 {
        self.windows
            .iter()
            .map(|w| i64::from(w.duration_secs) * 1000)
            .max()
            .unwrap_or(0)
    }

    pub fn wants(&self, kind: ReadingKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Aggregates over a window; see the WIT `window-stats` for the exact semantics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WindowStats {
    pub count: u32,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// The subject's latest reading strictly before a reading, by event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Previous {
    pub value: f64,
    pub at_ms: EpochMs,
}

/// Something that could not be processed, kept with its raw payload and the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from: a source name, or `rule:<name>@<version>` for a poison reading.
    pub origin: String,
    pub reason: String,
    pub payload: String,
    pub received_at_ms: EpochMs,
}

impl DeadLetter {
    /// Stable identity so that a replayed bad payload is stored once.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.origin.as_str(),
            self.reason.as_str(),
            self.payload.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A rule version's fault, recorded for the admin UI and for quarantine decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFault {
    pub rule: RuleRef,
    pub kind: FaultKind,
    pub detail: String,
    pub at_ms: EpochMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Trap,
    Timeout,
    MemoryLimit,
    OutputLimit,
    InvalidOutput,
    RuleError,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Trap,
        FaultKind::Timeout,
        FaultKind::MemoryLimit,
        FaultKind::OutputLimit,
        FaultKind::InvalidOutput,
        FaultKind::RuleError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::OutputLimit => "output-limit",
            FaultKind::InvalidOutput => "invalid-output",
            FaultKind::RuleError => "rule-error",
        }
    }
}

/// Current wall-clock time in epoch milliseconds (for receive times, never for windows).
pub fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_ms(ms: EpochMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
