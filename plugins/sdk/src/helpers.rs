//! Convenience constructors and accessors on the generated contract types.

use crate::{
    Alert, DeviceStatus, LogLevel, Measurement, ParamSpec, ParamType, ParamValue, Reading,
    ReadingKind, Severity, WindowSpec,
};

impl ParamSpec {
    fn new(name: &str, description: &str, type_: ParamType, default: ParamValue) -> Self {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            type_,
            default,
            min: None,
            max: None,
        }
    }

    /// A float parameter without bounds; add them with [`ParamSpec::bounds`].
    pub fn float(name: &str, description: &str, default: f64) -> Self {
        Self::new(
            name,
            description,
            ParamType::Float,
            ParamValue::Float(default),
        )
    }

    /// An integer parameter without bounds; add them with [`ParamSpec::bounds`].
    pub fn integer(name: &str, description: &str, default: i64) -> Self {
        Self::new(
            name,
            description,
            ParamType::Integer,
            ParamValue::Integer(default),
        )
    }

    /// A boolean parameter.
    pub fn boolean(name: &str, description: &str, default: bool) -> Self {
        Self::new(
            name,
            description,
            ParamType::Boolean,
            ParamValue::Boolean(default),
        )
    }

    /// Inclusive bounds the host enforces on configured values.
    #[must_use]
    pub fn bounds(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
}

impl WindowSpec {
    /// A trailing window of `duration_secs` seconds.
    pub fn new(name: &str, duration_secs: u32) -> Self {
        Self {
            name: name.to_owned(),
            duration_secs,
        }
    }
}

impl Reading {
    /// The glucose value in mg/dL, if this is a glucose reading.
    pub fn glucose(&self) -> Option<f64> {
        match self.measurement {
            Measurement::Glucose(mg_dl) => Some(mg_dl),
            Measurement::Device(_) => None,
        }
    }

    /// The device status, if this is a device reading.
    pub fn device(&self) -> Option<&DeviceStatus> {
        match &self.measurement {
            Measurement::Glucose(_) => None,
            Measurement::Device(status) => Some(status),
        }
    }

    /// Which stream the reading comes from.
    pub fn kind(&self) -> ReadingKind {
        match self.measurement {
            Measurement::Glucose(_) => ReadingKind::Glucose,
            Measurement::Device(_) => ReadingKind::Device,
        }
    }
}

impl Alert {
    /// An alert on reading `index` of the batch, without a value.
    ///
    /// # Panics
    /// When `index` does not fit in `u32` (a batch never holds that many).
    pub fn new(index: usize, code: &str, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            index: u32::try_from(index).expect("batch index fits in u32"),
            code: code.to_owned(),
            severity,
            message: message.into(),
            value: None,
        }
    }

    /// Attach the value that triggered the alert.
    #[must_use]
    pub fn with_value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }
}

/// Lowercase name of a log level, for native output.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}
