//! GlucoGuard simulator: seeded, reproducible glucose readings, device telemetry and dimension data, plus publishers that stream them.
//!
//! The entry points are [`Simulator`] (an iterator of [`Event`]s in emission order), [`stream`] (paces a simulator into a
//! [`Publisher`]) and [`dimensions`] (patients, devices and subscribers matching the readings for the same seed).
//! Nothing here depends on the host crate; the wire format is the JSON the host ingests.

mod config;
mod device;
pub mod dims;
mod duration;
mod event;
mod hardware;
mod patient;
mod physio;
pub mod publish;
mod rng;
mod scenario;
mod sim;
pub mod stats;
mod stream;
mod time;

pub use config::{Cadence, ConfigError, Model, ParseError, Profile, SimConfig};
pub use dims::{Dimensions, dimensions, dimensions_with_profiles};
pub use duration::{format_duration, parse_duration};
pub use event::{ConnectivityStatus, DeviceTelemetry, Event, GlucoseReading};
pub use hardware::{cgm_device_id, device_id_for, meter_device_id};
pub use publish::{
    CollectPublisher, HttpConfig, HttpPublisher, JsonLinesPublisher, MqttPublisher, MqttTarget,
    Publisher,
};
pub use scenario::{Scenario, ScenarioKind, ScenarioTime};
pub use sim::Simulator;
pub use stream::{Pacing, StreamStats, stream, stream_until};

/// Lowest glucose value the physiological model reports, mg/dL (the usual CGM "LO" limit).
pub const GLUCOSE_MIN_MG_DL: f64 = 40.0;
/// Highest glucose value the physiological model reports, mg/dL (the usual CGM "HI" limit).
pub const GLUCOSE_MAX_MG_DL: f64 = 400.0;
