//! Host integration tests: one binary, a module per area. They use the real rule components
//! built by `cargo xtask build-plugins` (found through `GLUCOGUARD_PLUGIN_DIR`).

mod architecture;
mod cli;
mod equivalence;
mod ingest;
mod mariadb;
mod pipeline;
mod sandbox;
mod scenarios;
mod store;
mod support;
mod windows;
