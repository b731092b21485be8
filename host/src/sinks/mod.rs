//! Notification sinks: where alerts go once the store has made them durable. A notifier must
//! not block the pipeline; slow or failing ones buffer or drop with a counter, never holding
//! up storage.
//!
//! Sinks never import the engine or the sources.

use crate::model::{Alert, format_ms};
use std::io::Write;
use tokio::sync::broadcast;

pub trait Notifier: Send + Sync {
    fn name(&self) -> &'static str;
    /// Alerts that passed suppression, in batch order.
    fn notify(&self, alerts: &[Alert]);
}

/// Prints alerts to stdout, one line each: the demo's and a developer's live view.
#[derive(Debug, Default)]
pub struct ConsoleNotifier;

impl Notifier for ConsoleNotifier {
    fn name(&self) -> &'static str {
        "console"
    }
    fn notify(&self, alerts: &[Alert]) {
        let mut out = std::io::stdout().lock();
        for a in alerts {
            let who = a
                .patient_id
                .map(|p| format!("patient {p}"))
                .unwrap_or_else(|| format!("device {}", a.device_id));
            let _ = writeln!(
                out,
                "ALERT {} {:<8} {who:<12} {} {}: {}",
                format_ms(a.at_ms),
                a.severity.as_str(),
                a.rule,
                a.code,
                a.message
            );
        }
    }
}

/// Fan-out of alerts to live subscribers (admin UI, tests). Lagging receivers lose the
/// oldest alerts, never block the pipeline.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Alert>,
}

impl LiveFeed {
    pub fn new(capacity: usize) -> Self {
        LiveFeed {
            tx: broadcast::channel(capacity).0,
        }
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.tx.subscribe()
    }
}

impl Notifier for LiveFeed {
    fn name(&self) -> &'static str {
        "live"
    }
    fn notify(&self, alerts: &[Alert]) {
        for a in alerts {
            let _ = self.tx.send(a.clone());
        }
    }
}
