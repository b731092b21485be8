//! Sinks: where a batch goes after the OLTP store made it durable.
//!
//! - Storage sinks ([`StorageSink`]: analytics, archive) take each batch and report, through
//!   the batch's [`Durable`] handle, when their copy is durable; a source item is acknowledged
//!   only when the store and every storage sink have. A sink may complete later (an archive
//!   completes when the file holding the batch is uploaded). A failed `write` is retried by the
//!   pipeline with backoff: storage blocks, so backpressure reaches the sources.
//! - Notifiers ([`Notifier`]) get the alerts that passed suppression and must never block.
//!
//! Sinks never import the engine, the sources, the store or the pipeline.

pub mod eventhubs;

use crate::model::batch::{FeedCursor, WriteBatch};
use crate::model::{Alert, format_ms};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Completion of one batch in one storage sink. `complete` once the batch is durable there;
/// dropping it uncompleted means "not delivered", and the batch is never acknowledged
/// (delivery is at-least-once, so the source will send it again).
pub struct Durable(Option<Box<dyn FnOnce() + Send>>);

impl Durable {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Durable(Some(Box::new(f)))
    }
    /// A handle that completes nothing (tests, one-off writes).
    pub fn noop() -> Self {
        Durable(None)
    }
    pub fn complete(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durable")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

/// How a storage sink fares, for `GET /api/sinks`: what it holds that is not yet durable
/// and whether it is failing (a sink retries internally, so this is where a stuck archive or
/// analytics database shows).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    pub name: &'static str,
    /// Rows accepted and not yet durable in the sink.
    pub pending_rows: u64,
    /// Batches whose `Durable` the sink completed.
    pub batches_completed: u64,
    /// Failed attempts so far (each retried).
    pub failures: u64,
    /// The most recent failure, while the sink keeps failing.
    pub last_error: Option<String>,
}

/// Locks a sink's state; a poisoned lock only means a panic elsewhere, and every sink state
/// here stays consistent between its statements, so the state is used as it is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The flush of a sink that completes batches from a background task: waits until
/// `drained()` holds, checking again after every `progress` signal and calling `nudge` (to
/// wake the task) before each wait. `false` if `deadline` passes first.
pub(crate) async fn wait_drained(
    progress: &tokio::sync::Notify,
    deadline: tokio::time::Instant,
    mut drained: impl FnMut() -> bool,
    mut nudge: impl FnMut(),
) -> bool {
    loop {
        let signalled = progress.notified();
        tokio::pin!(signalled);
        // Registered before the check, so a signal between the check and the wait counts.
        signalled.as_mut().enable();
        if drained() {
            return true;
        }
        nudge();
        if tokio::time::timeout_at(deadline, signalled).await.is_err() {
            return false;
        }
    }
}

pub trait StorageSink: Send + Sync {
    fn name(&self) -> &'static str;
    /// A snapshot of the sink's counters.
    fn status(&self) -> SinkStatus;
    /// Accepts a batch. On `Ok` the sink owns `durable` and completes it when the batch is
    /// durable in it (now or later); on `Err` the pipeline retries the same batch.
    fn write<'a>(
        &'a self,
        batch: &'a WriteBatch,
        durable: Durable,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Makes everything accepted so far durable (called on shutdown, after the last batch).
    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>>;
    /// Where the sink itself knows it holds the store's rows up to (a database that is its own
    /// record, like DuckDB); `None` (the default) resumes from the cursor the pipeline keeps
    /// for the sink in the store.
    fn resume_cursor(&self) -> BoxFuture<'_, Result<Option<FeedCursor>, SinkError>> {
        Box::pin(async { Ok(None) })
    }
}
use std::io::Write;
use tokio::sync::broadcast;

pub trait Notifier: Send + Sync {
    fn name(&self) -> &'static str;
    /// Alerts that passed suppression, in batch order.
    fn notify(&self, alerts: &[Alert]);
}

/// Prints alerts to stdout (or another writer), one line each: the demo's and an operator's
/// live view. Every line starts with `ALERT ` and ends with `id=<alert id>`.
///
/// By default a line carries no health data — no patient or device id, no value, no rule
/// message:
///
/// `ALERT <time> <severity> <rule@version> <code> <subject alias> id=<alert id>`
///
/// where the alias (`patient~1a2b3c`, `device~…`) is the first 6 hex digits of SHA-256 over a
/// random salt drawn once per process and the subject's id: stable for the life of the
/// process, so repeats of one patient can be told apart from another's, and not
/// reversible by whoever reads the terminal or its log. With `details` (`[notify]
/// console_details = true`), for a developer on test data, the line names the patient or
/// device and carries the rule's message:
///
/// `ALERT <time> <severity> patient <id> <rule@version> <code>: <message> id=<alert id>`
pub struct ConsoleNotifier {
    details: bool,
    out: std::sync::Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for ConsoleNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleNotifier")
            .field("details", &self.details)
            .finish_non_exhaustive()
    }
}

impl Default for ConsoleNotifier {
    /// Stdout, without details.
    fn default() -> Self {
        ConsoleNotifier::new(false)
    }
}

impl ConsoleNotifier {
    /// Prints to stdout; `details` puts patient ids and rule messages on the lines.
    pub fn new(details: bool) -> Self {
        ConsoleNotifier::to_writer(details, Box::new(std::io::stdout()))
    }

    /// Prints to `out` (tests, or another stream).
    pub fn to_writer(details: bool, out: Box<dyn Write + Send>) -> Self {
        ConsoleNotifier {
            details,
            out: std::sync::Mutex::new(out),
        }
    }

    /// `patient~1a2b3c`: a short tag for the alert's subject that does not reveal its id.
    fn alias(&self, a: &Alert) -> String {
        use sha2::{Digest, Sha256};
        let (kind, id) = match a.patient_id {
            Some(p) => ("patient", p),
            None => ("device", a.device_id),
        };
        let mut h = Sha256::new();
        h.update(process_salt());
        h.update(kind.as_bytes());
        h.update(id.to_be_bytes());
        format!("{kind}~{}", &hex::encode(&h.finalize()[..3]))
    }

    fn line(&self, a: &Alert) -> String {
        let (time, severity) = (format_ms(a.at_ms), a.severity.as_str());
        let (rule, code) = (one_line(&a.rule.to_string()), one_line(&a.code));
        if self.details {
            let who = a
                .patient_id
                .map(|p| format!("patient {p}"))
                .unwrap_or_else(|| format!("device {}", a.device_id));
            format!(
                "ALERT {time} {severity:<8} {who:<12} {rule} {code}: {} id={}",
                one_line(&a.message),
                a.id
            )
        } else {
            format!(
                "ALERT {time} {severity:<8} {rule} {code} {} id={}",
                self.alias(a),
                a.id
            )
        }
    }
}

/// Control characters (a newline in a rule's message) as spaces, so an alert stays one line
/// and `id=` stays its last field.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// 16 unpredictable bytes, drawn once per process: std's `RandomState` keys come from the
/// OS's random source.
fn process_salt() -> &'static [u8; 16] {
    static SALT: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    SALT.get_or_init(|| {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let mut salt = [0u8; 16];
        salt[..8].copy_from_slice(&state.hash_one(0u8).to_le_bytes());
        salt[8..].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
        salt
    })
}

impl Notifier for ConsoleNotifier {
    fn name(&self) -> &'static str {
        "console"
    }
    fn notify(&self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let mut out = lock(&self.out);
        for a in alerts {
            let _ = writeln!(out, "{}", self.line(a));
        }
        let _ = out.flush();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReadingKind, RuleRef, Severity};
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(lock(&self.0).clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn alert(reading: &str, patient: Option<u64>, message: &str) -> Alert {
        let rule = RuleRef {
            name: "default-glucose".into(),
            version: "1.0.0".into(),
        };
        let at_ms = 1_795_000_000_000;
        Alert {
            id: Alert::derive_id(&rule, reading, "high-glucose", at_ms),
            rule,
            reading_id: reading.into(),
            patient_id: patient,
            device_id: 555_444,
            kind: ReadingKind::Glucose,
            at_ms,
            code: "high-glucose".into(),
            severity: Severity::Critical,
            message: message.into(),
            value: Some(321.5),
        }
    }

    fn print(details: bool, alerts: &[Alert]) -> Vec<String> {
        let out = Captured::default();
        ConsoleNotifier::to_writer(details, Box::new(out.clone())).notify(alerts);
        out.lines()
    }

    #[test]
    fn console_lines_carry_no_patient_data_by_default() {
        let alerts = [
            alert("r-1", Some(987_654), "glucose 321.5 mg/dL for Alice"),
            alert("r-2", Some(987_654), "glucose 321.5 mg/dL for Alice"),
            alert("r-3", Some(123_123), "glucose 321.5 mg/dL for Bob"),
            alert("r-4", None, "sensor of device 555444\nfailing"),
        ];
        let lines = print(false, &alerts);
        assert_eq!(lines.len(), 4, "{lines:?}");
        for (line, a) in lines.iter().zip(&alerts) {
            assert!(
                line.starts_with("ALERT 2026-11-18T11:06:40.000Z critical "),
                "{line}"
            );
            assert!(
                line.contains(" default-glucose@1.0.0 high-glucose "),
                "{line}"
            );
            assert!(line.ends_with(&format!(" id={}", a.id)), "{line}");
            // The alias and the id are hashes: random hex may spell anything, so look at
            // the other fields.
            let fields: Vec<&str> = line
                .split(' ')
                .filter(|f| !f.starts_with("id=") && !f.contains('~'))
                .collect();
            for secret in ["987654", "123123", "555444", "321", "Alice", "Bob", "mg/dL"] {
                assert!(
                    !fields.iter().any(|f| f.contains(secret)),
                    "{secret} in {line}"
                );
            }
        }
        let alias = |l: &str| l.split(' ').rev().nth(1).unwrap().to_owned();
        assert!(alias(&lines[0]).starts_with("patient~") && alias(&lines[0]).len() == 14);
        assert_eq!(alias(&lines[0]), alias(&lines[1]), "one patient, one alias");
        assert_ne!(alias(&lines[0]), alias(&lines[2]));
        assert!(alias(&lines[3]).starts_with("device~"), "{}", lines[3]);
    }

    #[test]
    fn console_details_print_the_patient_and_the_message_on_one_line() {
        let alerts = [
            alert("r-1", Some(987_654), "glucose 321.5 mg/dL for Alice"),
            alert("r-4", None, "sensor\nfailing"),
        ];
        let lines = print(true, &alerts);
        assert_eq!(
            lines,
            [
                format!(
                    "ALERT 2026-11-18T11:06:40.000Z critical patient 987654 default-glucose@1.0.0 \
                     high-glucose: glucose 321.5 mg/dL for Alice id={}",
                    alerts[0].id
                ),
                format!(
                    "ALERT 2026-11-18T11:06:40.000Z critical device 555444 default-glucose@1.0.0 \
                     high-glucose: sensor failing id={}",
                    alerts[1].id
                ),
            ]
        );
    }
}
