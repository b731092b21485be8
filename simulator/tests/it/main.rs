//! Integration tests of the simulator crate, one module per area (one test binary, as STYLE.md asks).

mod cadence;
mod cli;
mod common;
mod determinism;
mod dims;
mod physiological;
mod prototype;
mod publish;
mod scenarios;
mod telemetry;
mod wire;
