//! Host integration tests: one binary, a module per area. They use the real rule components
//! built by `cargo xtask build-plugins` (found through `GLUCOGUARD_PLUGIN_DIR`).

mod architecture;
mod cli;
mod equivalence;
mod pipeline;
mod sandbox;
mod store;
mod support;
mod windows;
