//! The `glucoguard` binary as a user runs it: `backtest`, `rules inspect`, `rules release`,
//! and `run` stopped by SIGTERM or Ctrl-C with `/health` and `/ready` on the way.

use crate::support::*;
use glucoguard::store::prelude::*;

use glucoguard::store::sqlite::SqliteStore;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn glucoguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glucoguard"));
    c.env("RUST_BACKTRACE", "0").env("GLUCOGUARD_LOG", "warn");
    c
}

#[test]
fn backtest_writes_one_alert_per_line_naming_the_given_reading_ids() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    // Out of order, an integer reading_id, a prototype timestamp, one bad line.
    let lines = [
        r#"{"reading_id":3,"patient_id":1,"device_id":9,"glucose_level":100,"timestamp":"2026-11-28 10:10:00"}"#,
        r#"{"reading_id":"first","patient_id":1,"device_id":9,"glucose_level":113,"timestamp":"2026-11-28T10:00:00Z"}"#,
        r#"{"reading_id":"late","patient_id":1,"device_id":9,"glucose_level":100,"timestamp":"2026-11-28T10:05:00Z"}"#,
        "oops",
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = glucoguard()
        .args(["backtest", "--rule"])
        .arg(plugin_path("glucoguard_default_rule"))
        .args(["--params", "avg_high_mg_dl=104", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 lines, 3 readings, 0 duplicates, 1 invalid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid line 4: malformed JSON"),
        "{stdout}"
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = alerts
        .iter()
        .map(|a| a["reading_id"].as_str().unwrap())
        .collect();
    // first: 113 > 104; late: (113+100)/2 = 106.5 > 104; 3: (100+100)/2 = 100 (first is exactly 10 min older).
    assert_eq!(ids, vec!["first", "late"]);
    assert_eq!(alerts[1]["code"], "high-average");
    assert_eq!(alerts[1]["value"], 106.5);
}

#[test]
fn backtest_rejects_unknown_parameters_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, glucose_json("a", 1, T0, 100.0)).unwrap();
    let out = glucoguard()
        .args(["backtest", "--rule"])
        .arg(plugin_path("glucoguard_default_rule"))
        .args(["--params", "nope=1", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no parameter \"nope\""));
}

#[test]
fn rules_inspect_prints_the_declaration_or_the_rejection() {
    let out = glucoguard()
        .args(["rules", "inspect"])
        .arg(plugin_path("glucoguard_default_rule"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("default-glucose@1.0.0"), "{s}");
    assert!(s.contains("window avg-10m: 600 s"), "{s}");
    assert!(s.contains("param high_mg_dl: Float = 115 [40, 600]"), "{s}");
    assert!(s.contains("param avg_high_mg_dl: Float = 105"), "{s}");

    let out = glucoguard()
        .args(["rules", "inspect"])
        .arg(plugin_path("forbidden_import"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("imports forbidden interfaces") && e.contains("wasi:filesystem"),
        "{e}"
    );
}

/// A port nothing listens on now (bound to port 0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP client that returns 4xx/5xx as responses and never waits long.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get_json(url: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    let mut resp = agent().get(url).call()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| text.into()),
    ))
}

/// Reads a child's pipe to the end on its own thread, so a full pipe never blocks the child.
fn drain(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut pipe = pipe;
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    })
}

/// Waits for a child to exit; kills it and panics after `limit`.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("glucoguard did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `glucoguard run` child that is killed if the test fails before it stops.
struct Host {
    child: std::process::Child,
    base: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts `glucoguard run --config <config> --listen 127.0.0.1:<free port>` and waits
    /// until `/health` answers 200.
    fn start(config: &Path) -> Host {
        let port = free_port();
        let child = glucoguard()
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("GLUCOGUARD_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut host = Host {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = get_json(&format!("{}/health", host.base)) {
                return host;
            }
            if let Some(status) = host.child.try_wait().unwrap() {
                let mut err = String::new();
                let _ =
                    std::io::Read::read_to_string(host.child.stderr.as_mut().unwrap(), &mut err);
                panic!("glucoguard run exited early ({status}): {err}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "glucoguard run did not answer /health within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

/// A SQLite host config with the default rule, console alerts, and a local archive that rolls
/// only after a minute: what it holds is uploaded by the shutdown's flush.
fn run_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("glucoguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
kind = "sqlite"
path = "g.db"

[pipeline]
max_wait_ms = 5

[[rules]]
path = "{}"

[archive]
max_age_secs = 60
[archive.backend]
kind = "local"
path = "archive"

[notify]
console = true
"#,
            plugin_path("glucoguard_default_rule").display()
        ),
    )
    .unwrap();
    config
}

const RUN_READINGS: usize = 40;

/// Readings of patients 7001..=7003 every 5 min, alternately 100 and 200 mg/dL: half alert.
fn run_readings() -> String {
    let body: Vec<serde_json::Value> = (0..RUN_READINGS)
        .map(|i| {
            serde_json::from_str(&glucose_json(
                &format!("run-{i}"),
                7001 + (i % 3) as u64,
                T0 + i as i64 * 5 * MIN,
                if i % 2 == 0 { 100.0 } else { 200.0 },
            ))
            .unwrap()
        })
        .collect();
    serde_json::to_string(&body).unwrap()
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path());
    let token = crate::support::cli_token(&config);
    let mut host = Host::start(&config);
    let base = host.base.clone();

    let (status, health) = get_json(&format!("{base}/health")).unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["pipeline"]["alive"], true, "{health}");
    assert_eq!(health["store"]["kind"], "sqlite", "{health}");
    assert_eq!(health["store"]["reachable"], true, "{health}");
    assert_eq!(health["sinks"][0]["name"], "archive", "{health}");
    let (status, ready) = get_json(&format!("{base}/ready")).unwrap();
    assert_eq!((status, &ready["ready"]), (200, &true.into()), "{ready}");

    // The answer does not wait for the archive (which rolls only after a minute): the store
    // is the log the archive is fed from, so the readings are durable once it committed.
    let url = format!("{base}/api/ingest");
    let sent = Instant::now();
    let mut resp = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Authorization", &crate::support::bearer(&token))
        .send(run_readings())
        .unwrap();
    let (status, answer) = (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "answered without waiting for the archive's 60 s roll"
    );
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["accepted"], RUN_READINGS, "{answer}");
    // The archive holds them, not yet uploaded: /health shows its backlog.
    let started = Instant::now();
    let health = loop {
        let (_, health) = get_json(&format!("{base}/health")).unwrap();
        if health["sinks"][0]["pending_rows"].as_u64().unwrap_or(0) > 0 {
            break health;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the archive never took the readings: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health["healthy"], true, "{health}");

    let stdout = drain(host.child.stdout.take().unwrap());
    let stderr = drain(host.child.stderr.take().unwrap());
    host.signal("-TERM");
    let exit = wait_exit(&mut host.child, Duration::from_secs(30));
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(exit.code(), Some(0), "exit {exit}: {stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");

    // Everything posted is in the store, and the drain flushed the archive and recorded how
    // far it got, so the next start does not send it again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (counts, cursor) = rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("g.db")).await.unwrap();
        (
            store.counts().await.unwrap(),
            store.sink_cursor("archive").await.unwrap(),
        )
    });
    assert_eq!(counts.glucose_readings, RUN_READINGS as u64);
    assert_eq!(counts.alerts, (RUN_READINGS / 2) as u64);
    let cursor = cursor.expect("the archive's cursor was recorded");
    assert!(
        cursor.glucose.received_at_ms > 0 && cursor.alerts.received_at_ms > 0,
        "{cursor:?}"
    );
    let archived = walk(&dir.path().join("archive"));
    assert!(
        archived.iter().any(|p| p.contains("glucose_readings")),
        "the drain uploaded the archive: {archived:?}"
    );

    // The console printed alerts without patient data, each id once.
    let alerts: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ALERT ")).collect();
    assert!(!alerts.is_empty(), "{stdout}");
    let mut ids = std::collections::HashSet::new();
    for line in &alerts {
        let id = line.rsplit_once(" id=").expect("id= is the last field").1;
        assert!(ids.insert(id.to_owned()), "{id} notified twice: {stdout}");
        let (head, _) = line
            .split_once(" patient~")
            .unwrap_or_else(|| panic!("no patient alias in {line}"));
        assert!(!head.contains("700"), "a patient id in {line}");
        assert!(!head.contains("200"), "a value in {line}");
    }
}

#[test]
fn sigint_drains_and_exits_zero_like_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start(&run_config(dir.path()));
    let stderr = drain(host.child.stderr.take().unwrap());
    drop(host.child.stdout.take());
    host.signal("-INT");
    let exit = wait_exit(&mut host.child, Duration::from_secs(30));
    let stderr = stderr.join().unwrap();
    assert_eq!(exit.code(), Some(0), "exit {exit}: {stderr}");
    assert!(stderr.contains("SIGINT"), "{stderr}");
}

#[test]
fn a_host_nobody_can_administer_prints_one_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path());
    let run = |check: &dyn Fn(&str)| -> String {
        let mut host = Host::start(&config);
        let stderr = drain(host.child.stderr.take().unwrap());
        drop(host.child.stdout.take());
        check(&host.base);
        host.signal("-INT");
        let exit = wait_exit(&mut host.child, Duration::from_secs(30));
        let stderr = stderr.join().unwrap();
        assert_eq!(exit.code(), Some(0), "{stderr}");
        stderr
    };
    let first = run(&|base| {
        let (status, _) = get_json(&format!("{base}/api/stats")).unwrap();
        assert_eq!(status, 401, "no token, no stats");
    });
    let token = first
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("gg_"))
        .unwrap_or_else(|| panic!("no token printed: {first}"))
        .to_owned();
    let second = run(&|base| {
        let resp = agent()
            .get(&format!("{base}/api/me"))
            .header("Authorization", &crate::support::bearer(&token))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "the printed token works");
    });
    assert!(!second.contains("gg_"), "printed only once: {second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_release_clears_a_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let config = dir.path().join("glucoguard.toml");
    std::fs::write(&config, "[store]\nkind = \"sqlite\"\npath = \"g.db\"\n").unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    let rule = load(&engine(), "glucoguard_default_rule");
    store
        .put_rule_version(
            rule.info(),
            rule.sha256(),
            &plugin("glucoguard_default_rule"),
            &crate::support::audit(),
        )
        .await
        .unwrap();
    let quarantine = glucoguard::store::WriteBatch {
        quarantined: vec![(rule.rule_ref(), "3 faulty calls in a row".to_owned())],
        ..Default::default()
    };
    store.write_batch(&quarantine).await.unwrap();
    let reason = |versions: Vec<glucoguard::store::RuleVersionRecord>| {
        versions
            .into_iter()
            .find(|v| v.info.rule_ref() == rule.rule_ref())
            .unwrap()
            .quarantine_reason
    };
    assert!(reason(store.rule_versions().await.unwrap()).is_some());

    let release = |target: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            glucoguard()
                .args(["rules", "release", &target, "--config"])
                .arg(&config)
                .output()
                .unwrap()
        })
    };
    let name = rule.rule_ref().to_string();
    let out = release(name.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("released {name} from quarantine"))
            && stdout.contains("3 faulty calls in a row"),
        "{stdout}"
    );
    assert_eq!(reason(store.rule_versions().await.unwrap()), None);

    // Not quarantined any more, an unknown version, not NAME@VERSION: refused, clearly.
    let out = release(name.clone()).await.unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("is not quarantined"),
        "{e}"
    );
    let out = release(format!("{}@9.9.9", rule.info().name))
        .await
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("is not in the store")
            && e.contains(&rule.info().version),
        "{e}"
    );
    let out = release("no-version".to_owned()).await.unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("NAME@VERSION"), "{e}");
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// The logs (at the default `info`) and the terminal carry no glucose value and no patient
/// name, whatever the host does with them: alerts, a poison reading that traps a rule, an
/// implausible value dead-lettered, dimension data with names.
#[test]
fn no_glucose_value_or_patient_name_reaches_the_logs_or_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("glucoguard.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"sqlite\"\npath = \"g.db\"\n\n[[rules]]\npath = \"{}\"\n\n[[rules]]\npath = \"{}\"\n\n[notify]\nconsole = true\n",
            plugin_path("glucoguard_default_rule").display(),
            plugin_path("trap_on_poison").display()
        ),
    )
    .unwrap();
    let token = crate::support::cli_token(&config);
    let mut host = Host::start(&config);
    let base = host.base.clone();
    let stdout = drain(host.child.stdout.take().unwrap());
    let stderr = drain(host.child.stderr.take().unwrap());
    let dims = glucoguard::demo::simulated_dimensions(42, 3).unwrap();
    let names: Vec<String> = dims
        .patients
        .iter()
        .flat_map(|p| [p.first_name.clone(), p.last_name.clone()])
        .filter(|n| n.len() >= 4)
        .collect();
    assert!(!names.is_empty());
    let mut resp = agent()
        .post(&format!("{base}/api/dimensions"))
        .header("Content-Type", "application/json")
        .header("Authorization", &crate::support::bearer(&token))
        .send(serde_json::to_string(&dims).unwrap())
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.body_mut().read_to_string().unwrap()
    );
    let patient = dims.patients[0].patient_id;
    let body = format!(
        "[{},{},{},{}]",
        glucose_json("v1", patient, T0, 187.25),
        glucose_json("v2", patient, T0 + 5 * MIN, 193.75),
        glucose_json("v3", patient, T0 + 10 * MIN, 333.0),
        r#"{"patient_id":1,"device_id":2,"glucose_level":5123.5,"timestamp":"2026-11-18T11:00:00Z"}"#
    );
    let mut resp = agent()
        .post(&format!("{base}/api/ingest"))
        .header("Content-Type", "application/json")
        .header("Authorization", &crate::support::bearer(&token))
        .send(body)
        .unwrap();
    let answer = resp.body_mut().read_to_string().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{answer}");
    host.signal("-TERM");
    let exit = wait_exit(&mut host.child, Duration::from_secs(30));
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("ALERT "),
        "the alerts were printed: {stdout}"
    );
    assert!(stderr.contains("INFO"), "info logs were on: {stderr}");
    // Compared token by token (hex ids, salted aliases and timestamps may spell any digits).
    let tokens = |text: &str| -> std::collections::HashSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .map(|t| t.trim_end_matches('.').to_owned())
            .collect()
    };
    let (out, err) = (tokens(&stdout), tokens(&stderr));
    for secret in [
        "187.25", "187.2", "193.75", "193.8", "333", "333.0", "5123.5",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(names)
    {
        assert!(
            !out.contains(&secret),
            "{secret:?} on the terminal: {stdout}"
        );
        assert!(!err.contains(&secret), "{secret:?} in the logs: {stderr}");
    }
}

/// `glucoguard demo --serve` (what `cargo xtask demo` runs): the admin answers with the
/// simulated patients' history in the dashboard, the printed password logs in as `demo`, and
/// Ctrl-C ends it cleanly.
#[test]
fn the_served_demo_shows_the_simulated_patients_in_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = glucoguard()
        .args(["demo", "--rule"])
        .arg(plugin_path("glucoguard_default_rule"))
        .args([
            "--serve",
            "127.0.0.1:0",
            "--patients",
            "3",
            "--history",
            "1d",
            "--duration",
            "1h",
        ])
        .arg("--db")
        .arg(dir.path().join("demo.db"))
        .env_remove("GLUCOGUARD_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    // The banner: "open http://ADDR/web and log in as demo with password P".
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (url, password) = loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the demo ended before printing where to log in");
        if let Some(rest) = line.trim().strip_prefix("open ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(
                &words[1..7],
                ["and", "log", "in", "as", "demo", "with"],
                "{line}"
            );
            break (words[0].to_owned(), words[8].to_owned());
        }
    };
    let stderr = drain(stderr);
    let base = url
        .strip_suffix("/web")
        .expect("the URL opens /web")
        .to_owned();
    let agent = agent();
    let mut login = agent
        .post(&format!("{base}/api/login"))
        .header("Content-Type", "application/json")
        .send(serde_json::json!({"username": "demo", "password": password}).to_string())
        .unwrap();
    assert_eq!(
        login.status().as_u16(),
        200,
        "{}",
        login.body_mut().read_to_string().unwrap()
    );
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // A day of 5-minute readings per patient arrives at full speed; the dashboard reads it
    // from DuckDB once the feeder has copied it.
    let started = Instant::now();
    let list = loop {
        let mut resp = agent
            .get(&format!("{base}/api/dashboard/patients?days=2"))
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{text}");
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let counts: Vec<u64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metrics"]["count"].as_u64().unwrap())
            .collect();
        // 288 a day each, less the ones the simulator drops or delays.
        if counts.len() == 3 && counts.iter().all(|n| *n >= 250) {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the dashboard did not show a day per patient: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["last_reading_ms"].is_i64())
    );
    let mut page = agent
        .get(&format!("{base}/web/dashboard"))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    let html = page.body_mut().read_to_string().unwrap();
    for id in 1..=3 {
        assert!(
            html.contains(&format!("href=\"/web/patients/{id}\"")),
            "patient {id} listed"
        );
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(60));
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stdout.contains("3 patients, 6 devices"), "{stdout}");
}
