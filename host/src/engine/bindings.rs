//! The one place that generates host bindings for the WIT contract and converts between the
//! generated types and `model` types. Nothing outside `engine` sees a generated type.

use super::sandbox::HostState;
use crate::model;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule-plugin",
});

pub use self::glucoguard::rules::host as wit_host;
pub use self::glucoguard::rules::types as wit;

impl wit_host::Host for HostState {
    fn log(&mut self, level: wit_host::LogLevel, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let message: String = message.chars().take(512).collect();
        // Rule output may carry patient data: it is only ever logged at debug level.
        let level = match level {
            wit_host::LogLevel::Debug => "debug",
            wit_host::LogLevel::Info => "info",
            wit_host::LogLevel::Warn => "warn",
            wit_host::LogLevel::Error => "error",
        };
        tracing::debug!(target: "glucoguard::rule_log", rule = %self.rule, level, "{message}");
    }
}

impl wit::Host for HostState {}

pub fn info_from_wit(i: wit::RuleInfo) -> model::RuleInfo {
    model::RuleInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        kinds: i
            .kinds
            .into_iter()
            .map(|k| match k {
                wit::ReadingKind::Glucose => model::ReadingKind::Glucose,
                wit::ReadingKind::Device => model::ReadingKind::Device,
            })
            .collect(),
        windows: i
            .windows
            .into_iter()
            .map(|w| model::WindowSpec {
                name: w.name,
                duration_secs: w.duration_secs,
            })
            .collect(),
        params: i
            .params
            .into_iter()
            .map(|p| model::ParamSpec {
                name: p.name,
                description: p.description,
                ty: match p.type_ {
                    wit::ParamType::Float => model::ParamType::Float,
                    wit::ParamType::Integer => model::ParamType::Integer,
                    wit::ParamType::Boolean => model::ParamType::Boolean,
                },
                default: param_from_wit(p.default),
                min: p.min,
                max: p.max,
            })
            .collect(),
    }
}

fn param_from_wit(v: wit::ParamValue) -> model::ParamValue {
    match v {
        wit::ParamValue::Float(f) => model::ParamValue::Float(f),
        wit::ParamValue::Integer(i) => model::ParamValue::Integer(i),
        wit::ParamValue::Boolean(b) => model::ParamValue::Boolean(b),
    }
}

pub fn param_to_wit(v: model::ParamValue) -> wit::ParamValue {
    match v {
        model::ParamValue::Float(f) => wit::ParamValue::Float(f),
        model::ParamValue::Integer(i) => wit::ParamValue::Integer(i),
        model::ParamValue::Boolean(b) => wit::ParamValue::Boolean(b),
    }
}

pub fn reading_to_wit(r: &model::Reading, previous: Option<model::Previous>) -> wit::Reading {
    let (subject, measurement) = match &r.body {
        model::Body::Glucose(g) => (g.patient_id, wit::Measurement::Glucose(g.mg_dl)),
        model::Body::Device(d) => (
            d.device_id,
            wit::Measurement::Device(wit::DeviceStatus {
                battery_pct: d.battery_pct,
                connectivity: match d.connectivity {
                    model::Connectivity::Connected => wit::Connectivity::Connected,
                    model::Connectivity::Poor => wit::Connectivity::Poor,
                    model::Connectivity::Disconnected => wit::Connectivity::Disconnected,
                    model::Connectivity::Unknown => wit::Connectivity::Unknown,
                },
                firmware: d.firmware_version.clone().unwrap_or_default(),
                error_codes: d.error_codes.clone(),
            }),
        ),
    };
    wit::Reading {
        subject,
        at_ms: r.at_ms,
        measurement,
        previous: previous.map(|p| wit::PreviousReading {
            value: p.value,
            at_ms: p.at_ms,
        }),
    }
}

pub fn stats_to_wit(s: model::WindowStats) -> wit::WindowStats {
    wit::WindowStats {
        count: s.count,
        mean: s.mean,
        min: s.min,
        max: s.max,
    }
}

pub fn severity_from_wit(s: wit::Severity) -> model::Severity {
    match s {
        wit::Severity::Info => model::Severity::Info,
        wit::Severity::Warning => model::Severity::Warning,
        wit::Severity::Critical => model::Severity::Critical,
    }
}
