//! Crash acceptance tests of issue 9 ("No missed alert, no lost reading"), through the binary.
//!
//! `glucoguard run` on SQLite is fed over `POST /api/ingest` by an at-least-once producer,
//! killed (SIGKILL) or stopped (SIGTERM) mid-stream and restarted on the same database and
//! port; afterwards every reading and every alert is stored exactly once and no alert is
//! notified twice.
//!
//! The stream is the simulator's (seeded, deterministic), sent in event-time order: then a
//! reading's window holds exactly the readings `glucoguard backtest` gives it, whatever the
//! request boundaries, micro-batches and restarts, so backtest's alert ids are the reference
//! for the stored ones. An uninterrupted run of the same binary over the same requests is the
//! reference for which alerts are notified (suppression included).
//!
//! The console notifier prints one `ALERT … id=<alert id>` line per notified alert; each
//! child's stdout is read through a pipe, so the notifications of every run are counted.

use crate::support::plugin_path;
use glucoguard::store::prelude::*;
use glucoguard::store::sqlite::SqliteStore;
use glucoguard::store::{AlertStatus, Cursor};
use glucoguard_simulator::{SimConfig, Simulator};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Readings per `POST /api/ingest`.
const PER_REQUEST: usize = 20;
/// How many times the SIGKILL test kills the host mid-stream.
const KILLS: usize = 10;
/// How long a (re)started host may take until `/health` answers.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed host may take to drain and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may wait for its answer (the host answers within 30 s of durability
/// or with a 503).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the whole feed may take; a host that never comes back fails the test here.
const FEED_DEADLINE: Duration = Duration::from_secs(240);
/// Whether an alert of a request that was in flight when the host was SIGKILLed may go
/// unnotified. The pipeline notifies only the alerts a write stored for the first time, so a
/// replay never notifies twice; but a kill after the store's commit and before the console
/// line is written loses that notification for good (at-most-once delivery). Across SIGKILL
/// a notifier outside the store's transaction can promise "never twice" or "never missed",
/// not both: one side of the commit always has a window. These tests hold the host to "never
/// twice", as the pipeline promises; set this to `false` if notification becomes
/// at-least-once (e.g. an outbox re-notified on start), and give the "never twice" check the
/// per-kill tolerance instead.
const TOLERATE_MISSED_IN_KILLED_REQUEST: bool = true;

/// A small deterministic RNG (xorshift64*) for the kill points.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Self {
        Xorshift(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the producer sends: simulated readings and telemetry in event-time order, as JSON
/// lines and as request bodies of `PER_REQUEST` items.
struct Stream {
    lines: Vec<String>,
    bodies: Vec<String>,
    /// The host's id of each line (`parse_reading(line).id`), by line.
    ids: Vec<String>,
    /// The producer's `reading_id` of each line, by line.
    given: Vec<String>,
    glucose: usize,
    telemetry: usize,
}

impl Stream {
    fn simulated() -> Stream {
        let config = SimConfig {
            seed: 9,
            patients: 5,
            duration: chrono::Duration::hours(12),
            ..SimConfig::default()
        };
        let mut events: Vec<_> = Simulator::new(config).collect();
        // Event-time order (stable): late uploads of buffered readings move to where they
        // belong, so windows do not depend on arrival order (see the module comment).
        events.sort_by_key(|e| e.timestamp());
        let lines: Vec<String> = events.iter().map(|e| e.to_json_line()).collect();
        let (mut ids, mut given) = (Vec::new(), Vec::new());
        let (mut glucose, mut telemetry) = (0, 0);
        for line in &lines {
            let r = glucoguard::model::parse::parse_reading(line.as_bytes())
                .unwrap_or_else(|e| panic!("the simulator's line is valid: {line}: {}", e.0));
            match r.kind() {
                glucoguard::model::ReadingKind::Glucose => glucose += 1,
                glucoguard::model::ReadingKind::Device => telemetry += 1,
            }
            ids.push(r.id);
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            given.push(v["reading_id"].as_str().unwrap().to_owned());
        }
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "simulated reading ids are distinct"
        );
        let bodies = lines
            .chunks(PER_REQUEST)
            .map(|c| format!("[{}]", c.join(",")))
            .collect();
        Stream {
            lines,
            bodies,
            ids,
            given,
            glucose,
            telemetry,
        }
    }

    /// The host ids of the readings in the first `n` request bodies.
    fn ids_of_first(&self, n: usize) -> &[String] {
        &self.ids[..(n * PER_REQUEST).min(self.ids.len())]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `glucoguard run` on one SQLite file and one loopback port, restartable.
struct Harness {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    log: PathBuf,
    addr: String,
    runs: usize,
    /// Every `ALERT` line any run printed: (run, line).
    alert_lines: Arc<Mutex<Vec<(usize, String)>>>,
    /// An admin token for `POST /api/ingest`.
    token: String,
}

/// One running child.
struct Host {
    child: Child,
    run: usize,
    stdout: Option<JoinHandle<()>>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("glucoguard.db");
        let config = dir.path().join("glucoguard.toml");
        let rule = plugin_path("glucoguard_default_rule");
        let toml = format!(
            "[store]\nkind = \"sqlite\"\npath = {}\n\n[[rules]]\npath = {}\n\n[notify]\nconsole = true\n",
            serde_json::to_string(db.to_str().unwrap()).unwrap(),
            serde_json::to_string(rule.to_str().unwrap()).unwrap(),
        );
        std::fs::write(&config, toml).unwrap();
        let token = crate::support::cli_token(&config);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Harness {
            log: dir.path().join("host.log"),
            dir,
            config,
            db,
            addr: format!("127.0.0.1:{port}"),
            runs: 0,
            alert_lines: Arc::default(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the host and waits until `/health` answers.
    fn start(&mut self) -> Host {
        self.runs += 1;
        let run = self.runs;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== run {run} ===").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_glucoguard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &self.addr])
            .env("GLUCOGUARD_LOG", "warn")
            .env("RUST_BACKTRACE", "1")
            .env_remove("GLUCOGUARD_CONFIG")
            .env_remove("GLUCOGUARD_LISTEN")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("glucoguard starts");
        let out = child.stdout.take().unwrap();
        let lines = self.alert_lines.clone();
        // Reads to the end whatever it gets, so the child never blocks on a full pipe.
        let stdout = std::thread::spawn(move || {
            let mut out = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match out.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end();
                if line.starts_with("ALERT ") {
                    lock(&lines).push((run, line.to_owned()));
                }
            }
        });
        let mut host = Host {
            child,
            run,
            stdout: Some(stdout),
        };
        self.wait_healthy(&mut host);
        host
    }

    fn wait_healthy(&self, host: &mut Host) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = Instant::now();
        loop {
            if let Some(status) = host.child.try_wait().unwrap() {
                panic!(
                    "run {} of the host exited with {status} before /health answered\n{}",
                    host.run,
                    self.log_tail()
                );
            }
            if let Ok(resp) = agent.get(&self.url("/health")).call()
                && resp.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < HEALTH_TIMEOUT,
                "run {} of the host did not answer /health within {HEALTH_TIMEOUT:?}\n{}",
                host.run,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the hosts' stderr, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- host stderr (last 40 lines) ---\n{tail}")
    }

    /// The alert ids the console printed, in order, and the lines that carry no `id=` field.
    fn notified(&self) -> (Vec<(usize, String)>, Vec<String>) {
        let mut ids = Vec::new();
        let mut malformed = Vec::new();
        for (run, line) in lock(&self.alert_lines).iter() {
            match line
                .split_whitespace()
                .last()
                .and_then(|f| f.strip_prefix("id="))
            {
                Some(id) if !id.is_empty() => ids.push((*run, id.to_owned())),
                _ => malformed.push(line.clone()),
            }
        }
        (ids, malformed)
    }
}

impl Host {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then waits for the process and for its stdout to be read to the end.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
        self.join_stdout();
    }

    /// SIGTERM, then waits up to `EXIT_TIMEOUT` for the exit; `None` if it did not exit (the
    /// host is then killed).
    fn terminate(mut self) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > EXIT_TIMEOUT {
                self.child.kill().ok();
                self.child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.join_stdout();
        status
    }

    fn join_stdout(&mut self) {
        if let Some(t) = self.stdout.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Host {
    /// A failing test never leaves a host behind.
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The producer's progress, shared with the test thread.
#[derive(Default)]
struct Progress {
    /// Request bodies answered 2xx so far (they are sent in order, one at a time).
    answered: AtomicUsize,
    /// Requests sent, retries included.
    attempts: AtomicUsize,
    finished: AtomicBool,
    /// Non-2xx answers and connection errors seen, for the report.
    failures: Mutex<Vec<String>>,
}

impl Progress {
    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// An at-least-once producer: posts every body in order and retries the same body after any
/// connection error, timeout or non-2xx answer until it is answered 2xx. Returns an error
/// when the feed takes longer than `FEED_DEADLINE` or an answer is wrong.
fn spawn_feeder(
    url: String,
    token: String,
    bodies: Vec<String>,
    progress: Arc<Progress>,
) -> JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        let started = Instant::now();
        let result = (|| {
            for (i, body) in bodies.iter().enumerate() {
                let items = serde_json::from_str::<Vec<serde_json::Value>>(body)
                    .unwrap()
                    .len();
                loop {
                    if started.elapsed() > FEED_DEADLINE {
                        return Err(format!(
                            "the feed did not finish within {FEED_DEADLINE:?}: request {i} of {} \
                             unanswered",
                            bodies.len()
                        ));
                    }
                    progress.attempts.fetch_add(1, Ordering::SeqCst);
                    let answer = agent
                        .post(&url)
                        .header("Authorization", &crate::support::bearer(&token))
                        .header("Content-Type", "application/json")
                        .send(body.as_str())
                        .and_then(|mut r| {
                            let status = r.status().as_u16();
                            r.body_mut().read_to_string().map(|t| (status, t))
                        });
                    match answer {
                        Ok((status, text)) if (200..300).contains(&status) => {
                            let v: serde_json::Value = serde_json::from_str(&text)
                                .map_err(|e| format!("request {i}: answer {text:?}: {e}"))?;
                            if v["received"] != items
                                || v["accepted"] != items
                                || v["rejected"] != serde_json::json!([])
                            {
                                return Err(format!(
                                    "request {i} of {items} valid readings was answered {text}"
                                ));
                            }
                            progress.answered.store(i + 1, Ordering::SeqCst);
                            break;
                        }
                        Ok((status, text)) => {
                            lock(&progress.failures).push(format!("request {i}: {status} {text}"));
                        }
                        Err(e) => {
                            lock(&progress.failures).push(format!("request {i}: {e}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(())
        })();
        progress.finished.store(true, Ordering::SeqCst);
        result
    })
}

/// Waits until `done` holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the store holds after a run.
struct Stored {
    counts: glucoguard::store::Counts,
    /// Every reading id of both kinds, as listed (duplicates would show twice).
    reading_ids: Vec<String>,
    /// Every alert with its status, as listed.
    alerts: Vec<(String, AlertStatus)>,
}

impl Stored {
    fn read(db: &Path) -> Stored {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(db).await.expect("the store opens");
            let counts = store.counts().await.unwrap();
            let mut reading_ids = Vec::new();
            for kind in [
                glucoguard::model::ReadingKind::Glucose,
                glucoguard::model::ReadingKind::Device,
            ] {
                let mut after = Cursor::default();
                loop {
                    let page = store.readings_since(kind, &after, 500).await.unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.cursor(&last.item.id);
                    reading_ids.extend(page.into_iter().map(|r| r.item.id));
                }
            }
            let alerts = store
                .alerts(10_000_000)
                .await
                .unwrap()
                .into_iter()
                .map(|(a, s)| (a.id, s))
                .collect();
            Stored {
                counts,
                reading_ids,
                alerts,
            }
        })
    }

    fn alert_ids(&self) -> BTreeSet<String> {
        self.alerts.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The alerts stored as notified (every status but suppressed).
    fn notifiable(&self) -> BTreeSet<String> {
        self.alerts
            .iter()
            .filter(|(_, s)| *s != AlertStatus::Suppressed)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The references every crash run is compared with.
struct Reference {
    /// Alert ids `glucoguard backtest` gives the stream, with their reading ids as backtest
    /// names them.
    backtest: BTreeMap<String, String>,
    /// Alert ids an uninterrupted run notified.
    notified: BTreeSet<String>,
    uninterrupted_problems: Vec<String>,
}

impl Reference {
    fn compute(stream: &Stream) -> Reference {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("stream.jsonl");
        let output = dir.path().join("alerts.jsonl");
        std::fs::write(&input, stream.lines.join("\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_glucoguard"))
            .arg("backtest")
            .arg("--rule")
            .arg(plugin_path("glucoguard_default_rule"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .env("GLUCOGUARD_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "backtest failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut backtest = BTreeMap::new();
        for line in std::fs::read_to_string(&output).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["alert_id"].as_str().unwrap().to_owned();
            let reading = v["reading_id"].as_str().unwrap().to_owned();
            assert!(
                backtest.insert(id.clone(), reading).is_none(),
                "backtest wrote alert {id} twice"
            );
        }
        assert!(
            backtest.len() > 20,
            "the stream raises alerts with the default rule (backtest: {})",
            backtest.len()
        );

        // One uninterrupted run over the same requests.
        let mut h = Harness::new();
        let host = h.start();
        let progress = Arc::new(Progress::default());
        let feeder = spawn_feeder(
            h.url("/api/ingest"),
            h.token.clone(),
            stream.bodies.clone(),
            progress.clone(),
        );
        let fed = feeder.join().unwrap();
        host.kill();
        fed.unwrap_or_else(|e| panic!("uninterrupted feed: {e}\n{}", h.log_tail()));
        let stored = Stored::read(&h.db);
        let (notified, malformed) = h.notified();
        let mut problems = Vec::new();
        check_notifications(
            &mut problems,
            "uninterrupted run",
            &notified,
            &malformed,
            &stored,
            &|id| (format!("alert {id}"), false),
        );
        if stored.alert_ids() != backtest.keys().cloned().collect::<BTreeSet<_>>() {
            problems.push(format!(
                "an uninterrupted run stored {} alerts, backtest gives {} (ids differ: {}): the \
                 pipeline's windows differ from backtest's even without a crash",
                stored.alerts.len(),
                backtest.len(),
                diff_summary(&stored.alert_ids(), &backtest.keys().cloned().collect())
            ));
        }
        Reference {
            backtest,
            notified: notified.into_iter().map(|(_, id)| id).collect(),
            uninterrupted_problems: problems,
        }
    }

    fn backtest_ids(&self) -> BTreeSet<String> {
        self.backtest.keys().cloned().collect()
    }
}

/// `a − b` and `b − a`, a few of each.
fn diff_summary(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let only_a: Vec<&String> = a.difference(b).collect();
    let only_b: Vec<&String> = b.difference(a).collect();
    format!(
        "{} only in the first, e.g. {:?}; {} only in the second, e.g. {:?}",
        only_a.len(),
        &only_a[..only_a.len().min(3)],
        only_b.len(),
        &only_b[..only_b.len().min(3)]
    )
}

/// No line without `id=`, no alert notified twice, exactly the stored notifiable alerts
/// notified: none that was not stored or stored as suppressed, and none missed. `locate`
/// describes an alert id for the messages and says whether its request was in flight at a
/// SIGKILL (see [`TOLERATE_MISSED_IN_KILLED_REQUEST`]).
fn check_notifications(
    problems: &mut Vec<String>,
    what: &str,
    notified: &[(usize, String)],
    malformed: &[String],
    stored: &Stored,
    locate: &dyn Fn(&str) -> (String, bool),
) {
    if !malformed.is_empty() {
        problems.push(format!(
            "{what}: {} console ALERT lines do not end with an `id=<alert id>` field (is the \
             console format change in?), e.g. {:?}",
            malformed.len(),
            &malformed[..malformed.len().min(2)]
        ));
        return;
    }
    let mut runs_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (run, id) in notified {
        runs_of.entry(id).or_default().push(*run);
    }
    let twice: Vec<String> = runs_of
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(id, runs)| format!("{} printed by runs {runs:?}", locate(id).0))
        .collect();
    if !twice.is_empty() {
        problems.push(format!(
            "{what}: {} alerts were notified more than once: {}",
            twice.len(),
            twice[..twice.len().min(5)].join("; ")
        ));
    }
    let notified: BTreeSet<String> = runs_of.keys().map(|s| (*s).to_owned()).collect();
    let notifiable = stored.notifiable();
    let stray: Vec<String> = notified
        .difference(&notifiable)
        .map(|id| locate(id).0)
        .collect();
    if !stray.is_empty() {
        problems.push(format!(
            "{what}: {} notified alerts are not stored, or stored as suppressed: {}",
            stray.len(),
            stray[..stray.len().min(5)].join("; ")
        ));
    }
    let (killed, missed): (Vec<_>, Vec<_>) = notifiable
        .difference(&notified)
        .map(|id| locate(id))
        .partition(|(_, killed)| *killed && TOLERATE_MISSED_IN_KILLED_REQUEST);
    let missed: Vec<String> = missed.into_iter().map(|(m, _)| m).collect();
    if !missed.is_empty() {
        problems.push(format!(
            "{what}: {} alerts are stored as notified (not suppressed) but were never notified \
             (missed alerts): {}",
            missed.len(),
            missed[..missed.len().min(5)].join("; ")
        ));
    }
    if !killed.is_empty() {
        // Visible with `--no-capture`: the at-most-once window, hit.
        eprintln!(
            "note: {what}: {} alerts of requests in flight at a SIGKILL were stored but never \
             notified (committed, killed before the console line): {}",
            killed.len(),
            killed
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// Every sent reading stored exactly once, no dead letters, every backtest alert stored
/// exactly once, and the notifications as in the uninterrupted run.
/// `killed_in`: the requests in flight when the host was SIGKILLed.
fn check_exactly_once(
    problems: &mut Vec<String>,
    stream: &Stream,
    reference: &Reference,
    h: &Harness,
    killed_in: &[usize],
) {
    let stored = Stored::read(&h.db);
    let c = &stored.counts;
    if c.glucose_readings != stream.glucose as u64 || c.device_readings != stream.telemetry as u64 {
        problems.push(format!(
            "stored {} glucose readings and {} telemetry readings; sent {} and {} distinct ones",
            c.glucose_readings, c.device_readings, stream.glucose, stream.telemetry
        ));
    }
    if c.dead_letters != 0 {
        problems.push(format!(
            "{} dead letters from valid readings",
            c.dead_letters
        ));
    }
    let listed: BTreeSet<String> = stored.reading_ids.iter().cloned().collect();
    if listed.len() != stored.reading_ids.len() {
        problems.push(format!(
            "{} reading rows listed for {} ids",
            stored.reading_ids.len(),
            listed.len()
        ));
    }
    let sent: BTreeSet<String> = stream.ids.iter().cloned().collect();
    if listed != sent {
        problems.push(format!(
            "stored reading ids differ from the sent ones (stored vs sent: {})",
            diff_summary(&listed, &sent)
        ));
    }
    let alert_ids = stored.alert_ids();
    if alert_ids.len() != stored.alerts.len() || c.alerts != alert_ids.len() as u64 {
        problems.push(format!(
            "{} alert rows listed, {} counted, for {} ids",
            stored.alerts.len(),
            c.alerts,
            alert_ids.len()
        ));
    }
    if alert_ids != reference.backtest_ids() {
        problems.push(format!(
            "stored {} alerts, backtest gives {} (stored vs backtest: {})",
            alert_ids.len(),
            reference.backtest.len(),
            diff_summary(&alert_ids, &reference.backtest_ids())
        ));
    }
    let (notified, malformed) = h.notified();
    let locate = |id: &str| {
        let Some(reading) = reference.backtest.get(id) else {
            return (format!("alert {id} (not in backtest)"), false);
        };
        let line = stream
            .given
            .iter()
            .position(|g| g == reading)
            .or_else(|| stream.ids.iter().position(|r| r == reading));
        match line {
            Some(line) => {
                let request = line / PER_REQUEST;
                let killed = killed_in.contains(&request);
                let hit = if killed {
                    ", in flight at a SIGKILL"
                } else {
                    ""
                };
                (
                    format!("alert {id} (reading {reading}, request {request}{hit})"),
                    killed,
                )
            }
            None => (format!("alert {id} (reading {reading})"), false),
        }
    };
    check_notifications(
        problems,
        "across all runs",
        &notified,
        &malformed,
        &stored,
        &locate,
    );
    // Suppression decides the same with restarts as without: the alerts stored as notified
    // are the ones an uninterrupted run notified.
    if reference.uninterrupted_problems.is_empty() && stored.notifiable() != reference.notified {
        problems.push(format!(
            "{} alerts are stored as notified (not suppressed), an uninterrupted run notified {} \
             (these runs vs uninterrupted: {}); suppression state lost across a restart?",
            stored.notifiable().len(),
            reference.notified.len(),
            diff_summary(&stored.notifiable(), &reference.notified)
        ));
    }
}

fn fail_on(problems: Vec<String>, context: String, h: &Harness) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}\n\n{context}\n{}",
        problems.len(),
        problems.join("\n- "),
        h.log_tail()
    );
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_notifies_once() {
    let stream = Stream::simulated();
    let reference = Reference::compute(&stream);
    let mut rng = Xorshift::new(0x9E37_79B9_7F4A_7C15);
    let mut h = Harness::new();
    let mut host = h.start();
    let progress = Arc::new(Progress::default());
    let feeder = spawn_feeder(
        h.url("/api/ingest"),
        h.token.clone(),
        stream.bodies.clone(),
        progress.clone(),
    );
    let total = stream.bodies.len();
    let mut schedule = Vec::new();
    for kill in 0..KILLS {
        // A few more answers, then a random moment: mostly in the middle of a request (before
        // its batch is durable, between the store and the answer, or while it is read).
        let target = progress.answered() + rng.below(3) as usize;
        wait_until(
            Duration::from_secs(60),
            &format!("kill {kill}: the feed reaches request {target}"),
            || progress.answered() >= target || progress.finished(),
        );
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        if progress.finished() {
            break;
        }
        schedule.push((host.run, progress.answered()));
        host.kill();
        host = h.start();
    }
    let fed = feeder.join().unwrap();
    host.kill();
    let mut problems = reference.uninterrupted_problems.clone();
    if let Err(e) = fed {
        problems.push(e);
    } else if schedule.len() < KILLS {
        problems.push(format!(
            "the stream ({total} requests) ended after {} of {KILLS} kills: make it longer",
            schedule.len()
        ));
    }
    let killed_in: Vec<usize> = schedule.iter().map(|&(_, answered)| answered).collect();
    check_exactly_once(&mut problems, &stream, &reference, &h, &killed_in);
    let context = format!(
        "{total} requests of {PER_REQUEST} readings ({} attempts), {} backtest alerts, {} \
         notified uninterrupted; killed (run, requests answered before the kill): {schedule:?}",
        progress.attempts.load(Ordering::SeqCst),
        reference.backtest.len(),
        reference.notified.len(),
    );
    fail_on(problems, context, &h);
}

#[test]
fn sigterm_mid_stream_drains_and_exits_zero() {
    let stream = Stream::simulated();
    let reference = Reference::compute(&stream);
    let mut rng = Xorshift::new(0xD1B5_4A32_D192_ED03);
    let mut h = Harness::new();
    let host = h.start();
    let progress = Arc::new(Progress::default());
    let feeder = spawn_feeder(
        h.url("/api/ingest"),
        h.token.clone(),
        stream.bodies.clone(),
        progress.clone(),
    );
    let total = stream.bodies.len();
    let target = total / 3 + rng.below((total / 3) as u64) as usize;
    wait_until(
        Duration::from_secs(120),
        &format!("the feed reaches request {target}"),
        || progress.answered() >= target || progress.finished(),
    );
    std::thread::sleep(Duration::from_micros(rng.below(30_000)));
    let mut problems = reference.uninterrupted_problems.clone();
    if progress.finished() {
        problems.push("the feed ended (or failed) before SIGTERM".to_owned());
    }
    let status = host.terminate();
    match status {
        Some(s) if s.code() == Some(0) => {}
        Some(s) => problems.push(format!(
            "SIGTERM mid-stream: the host exited with {s} instead of draining and exiting 0 \
             (is SIGTERM handled yet?)"
        )),
        None => problems.push(format!(
            "SIGTERM mid-stream: the host did not exit within {EXIT_TIMEOUT:?}"
        )),
    }
    // Whatever the stopped host answered 2xx is durable (answers read after its exit can only
    // be its own; one still being read is simply not counted).
    let acknowledged = progress.answered();
    let stored = Stored::read(&h.db);
    let listed: BTreeSet<&String> = stored.reading_ids.iter().collect();
    let lost: Vec<&String> = stream
        .ids_of_first(acknowledged)
        .iter()
        .filter(|id| !listed.contains(id))
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "after SIGTERM, {} readings of the {acknowledged} acknowledged requests are not in \
             the store, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        ));
    }
    // And so are their alerts (backtest names readings by the producer's id).
    let acked_readings: BTreeSet<&String> = stream.given[..stream.ids_of_first(acknowledged).len()]
        .iter()
        .chain(stream.ids_of_first(acknowledged))
        .collect();
    let stored_alerts = stored.alert_ids();
    let missing_alerts: Vec<&String> = reference
        .backtest
        .iter()
        .filter(|(id, reading)| acked_readings.contains(reading) && !stored_alerts.contains(*id))
        .map(|(id, _)| id)
        .collect();
    if !missing_alerts.is_empty() {
        problems.push(format!(
            "after SIGTERM, {} alerts of acknowledged readings are not in the store, e.g. {:?}",
            missing_alerts.len(),
            &missing_alerts[..missing_alerts.len().min(3)]
        ));
    }
    drop(stored);

    // One more run: the producer resends what was not answered, then a clean stop.
    let host = h.start();
    let fed = feeder.join().unwrap();
    if let Err(e) = fed {
        problems.push(e);
    }
    match host.terminate() {
        Some(s) if s.code() == Some(0) => {}
        other => problems.push(format!(
            "SIGTERM after the feed: the host ended with {other:?} instead of exit code 0"
        )),
    }
    check_exactly_once(&mut problems, &stream, &reference, &h, &[]);
    let context = format!(
        "{total} requests of {PER_REQUEST} readings ({} attempts), SIGTERM after {acknowledged} \
         answered, {} backtest alerts, {} notified uninterrupted",
        progress.attempts.load(Ordering::SeqCst),
        reference.backtest.len(),
        reference.notified.len(),
    );
    fail_on(problems, context, &h);
}
