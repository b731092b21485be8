//! Logging setup. Logs go to stderr as key-value lines; the filter comes from
//! `GLUCOGUARD_LOG` (then `RUST_LOG`), default `info`. Patient data is only ever logged at
//! debug level, so the default filter never shows glucose values or names.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("GLUCOGUARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
