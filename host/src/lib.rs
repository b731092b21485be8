//! GlucoGuard host: streams glucose readings and device telemetry through sandboxed Wasm alert
//! rules and dispatches what they raise to stores and notifiers. See ARCHITECTURE.md.

pub mod admin;
pub mod analytics;
pub mod app;
pub mod archive;
pub mod backtest;
pub mod config;
pub mod demo;
pub mod engine;
pub mod model;
pub mod pipeline;
pub mod retention;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod web;
