//! Host integration tests: one binary, a module per area. They use the real rule components
//! built by `cargo xtask build-plugins` (found through `GLUCOGUARD_PLUGIN_DIR`).

mod admin;
mod analytics;
mod architecture;
mod archive;
mod backtest_diff;
mod cli;
mod crash;
mod dashboard;
mod equivalence;
mod eventhubs;
mod eventhubs_balanced;
mod ingest;
mod issue9;
mod mariadb;
mod mqtt;
mod pipeline;
mod retention;
mod rules_in_host;
mod sandbox;
mod scenarios;
mod store;
mod support;
mod tls;
mod upload;
mod windows;
