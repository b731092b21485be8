//! Pipeline configuration, parsed in two steps: [`RawConfig`] (serde, defaults) from a TOML
//! file, then [`Config`] (validated, paths resolved) which is all the running system sees.
//! Secrets never live here: connection strings with credentials come from the environment.

use crate::engine::EngineConfig;
use crate::model::ParamValue;
use crate::pipeline::PipelineConfig;
use crate::sources::SourceConfig;
use crate::store::mysql::{MySqlOptions, MySqlUrl};
use crate::store::sqlite::SqliteOptions;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub notify: RawNotify,
    #[serde(default)]
    pub http: RawHttp,
    /// DuckDB analytics; off when the section is absent.
    pub analytics: Option<RawAnalytics>,
    /// Parquet archive; off when the section is absent.
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// Retention of raw readings in the OLTP store; keep forever when absent.
    pub retention: Option<RawRetention>,
    /// Bounds on dead letters and rule faults; always applied, defaults when absent.
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
}

/// `[diagnostics]`: dead letters and rule faults are kept for at most `max_age_days` and at
/// most the newest `max_rows` of each, so a flood of bad input cannot fill the disk; a job
/// applies it every `every_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsConfig {
    pub max_rows: u64,
    pub max_age_days: u32,
    pub every_secs: u64,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig {
            max_rows: 100_000,
            max_age_days: 30,
            every_secs: 600,
        }
    }
}

/// `[analytics]`: the DuckDB file the dashboard queries, fed by the pipeline and caught up
/// from the OLTP store on start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalytics {
    #[serde(default = "default_duckdb_path")]
    pub path: PathBuf,
}

fn default_duckdb_path() -> PathBuf {
    PathBuf::from("glucoguard.duckdb")
}

/// `[retention]`: raw readings and telemetry older than `raw_readings_days` leave the OLTP
/// store (alerts stay); a job applies it every `every_secs`. Needs `[archive]`, where the
/// readings remain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub raw_readings_days: u32,
    #[serde(default = "default_retention_every")]
    pub every_secs: u64,
}

fn default_retention_every() -> u64 {
    3600
}

/// The HTTP listener for ingest and the admin API; off unless `listen` is set here or by
/// `--listen` / `GLUCOGUARD_LISTEN`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain (leaf first) for HTTPS from the binary, for deployments without
    /// a TLS-terminating proxy; together with `tls_key_file` or not at all.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (unencrypted: the host starts unattended).
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawStore {
    Sqlite {
        path: PathBuf,
        /// `false` relaxes `synchronous` to NORMAL: acknowledged batches may be lost on power
        /// loss or OS crash, never on a process crash.
        #[serde(default = "yes")]
        durable_on_power_loss: bool,
    },
    /// MySQL / MariaDB. The URL is read from the environment variable `url_env` names.
    #[serde(alias = "mariadb")]
    Mysql(MySqlOptions),
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore::Sqlite {
            path: PathBuf::from("glucoguard.db"),
            durable_on_power_loss: true,
        }
    }
}

/// `[[sources]]`: one entry per source, `kind` names which. The embedded source and HTTP
/// ingest are always there and not listed.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawSource {
    /// JSON lines read once from a file.
    File(crate::sources::file::RawFileSource),
    /// An MQTT 5 broker.
    Mqtt(crate::sources::mqtt::RawMqttSource),
    #[serde(rename = "eventhubs")]
    EventHubs(crate::sources::eventhubs::RawEventHubsSource),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub path: PathBuf,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
}

/// `[notify]`: alert lines on stdout. By default a line names no patient and carries no
/// value or rule message (see [`crate::sinks::ConsoleNotifier`]); `console_details = true`
/// prints them, for a developer's terminal on test data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    #[serde(default = "yes")]
    pub console: bool,
    #[serde(default)]
    pub console_details: bool,
    /// `[notify.eventhubs]`: alerts published to an Event Hub; off when absent.
    pub eventhubs: Option<crate::sinks::eventhubs::RawEventHubsNotify>,
}

impl Default for RawNotify {
    fn default() -> Self {
        RawNotify {
            console: true,
            console_details: false,
            eventhubs: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub store: StoreConfig,
    pub engine: EngineConfig,
    pub pipeline: PipelineConfig,
    /// `[[sources]]`, each built and started by `app::start`.
    pub sources: Vec<SourceConfig>,
    pub rules: Vec<RuleConfig>,
    pub console: bool,
    /// The console prints patient ids, values and rule messages (`[notify] console_details`).
    pub console_details: bool,
    /// `[notify.eventhubs]`: the alerts hub notifier.
    pub eventhubs_alerts: Option<crate::sinks::eventhubs::EventHubsNotifyConfig>,
    pub listen: Option<std::net::SocketAddr>,
    /// HTTPS on `listen` (`[http] tls_cert_file` / `tls_key_file`); plain HTTP when `None`.
    /// The files are read and checked by `app::start`, before anything else starts.
    pub tls: Option<TlsFiles>,
    pub analytics: Option<AnalyticsConfig>,
    pub archive: Option<crate::archive::ArchiveConfig>,
    pub retention: Option<RetentionConfig>,
    pub diagnostics: DiagnosticsConfig,
}

impl Default for Config {
    /// The embedded store alone (`glucoguard.db`), default engine and pipeline, no sources,
    /// rules or sinks; tests fill in what they need.
    fn default() -> Self {
        Config::validate(RawConfig::default(), Path::new(".")).expect("the default config is valid")
    }
}

#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub path: PathBuf,
}

/// The certificate and key files for HTTPS, resolved against the config file's folder.
/// Only the paths: the key's content is read at start and never kept here or printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Raw readings with event time older than now minus this leave the OLTP store.
    pub max_age: std::time::Duration,
    /// How often the scheduled job applies it.
    pub every: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
        options: SqliteOptions,
    },
    /// The URL prints without its password.
    Mysql {
        url: MySqlUrl,
        options: MySqlOptions,
    },
}

impl StoreConfig {
    /// The SQLite file at `path` with the safe defaults.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        StoreConfig::Sqlite {
            path: path.into(),
            options: SqliteOptions::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub path: PathBuf,
    pub enabled: bool,
    pub params: BTreeMap<String, ParamValue>,
}

impl Config {
    /// Reads and validates a TOML file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::validate(raw, base)
    }

    pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let e = &raw.engine;
        let p = &raw.pipeline;
        let mut problems = Vec::new();
        if e.max_memory_bytes < (1 << 20) {
            problems.push("engine.max_memory_bytes must be at least 1 MiB".to_owned());
        }
        if e.call_timeout_ms == 0 || e.epoch_tick_ms == 0 {
            problems.push(
                "engine.call_timeout_ms and engine.epoch_tick_ms must be positive".to_owned(),
            );
        }
        if !e.epoch_deadline {
            problems.push(
                "engine.epoch_deadline = false is refused: without the deadline a rule that loops \
                 hangs the host (it exists for benchmarks, through EngineConfig in code)"
                    .to_owned(),
            );
        }
        if e.quarantine_after_faults == 0 {
            problems.push("engine.quarantine_after_faults must be at least 1".to_owned());
        }
        if p.max_batch == 0 || p.max_batch > 65_536 {
            problems.push("pipeline.max_batch must be within 1..=65536".to_owned());
        }
        if p.queue_capacity == 0 {
            problems.push("pipeline.queue_capacity must be positive".to_owned());
        }
        let store = match raw.store {
            RawStore::Sqlite {
                path,
                durable_on_power_loss,
            } => Some(StoreConfig::Sqlite {
                path: resolve(&path),
                options: SqliteOptions {
                    durable_on_power_loss,
                },
            }),
            RawStore::Mysql(options) => match mysql_store(options, |k| std::env::var(k).ok()) {
                Ok(store) => Some(store),
                Err(mut p) => {
                    problems.append(&mut p);
                    None
                }
            },
        };
        if let Some(archive) = &raw.archive {
            problems.extend(archive.problems());
        }
        let retention = match &raw.retention {
            None => None,
            Some(r) => {
                if r.raw_readings_days == 0 {
                    problems.push(
                        "retention.raw_readings_days must be at least 1 (rule windows are rebuilt \
                         from recent readings)"
                            .to_owned(),
                    );
                }
                if r.every_secs == 0 {
                    problems.push("retention.every_secs must be positive".to_owned());
                }
                if raw.archive.is_none() {
                    problems.push(
                        "retention needs an [archive]: raw readings leave the OLTP store only \
                         when they remain in the archive"
                            .to_owned(),
                    );
                }
                Some(RetentionConfig {
                    max_age: std::time::Duration::from_secs(
                        u64::from(r.raw_readings_days) * 86_400,
                    ),
                    every: std::time::Duration::from_secs(r.every_secs),
                })
            }
        };
        let tls = match (&raw.http.tls_cert_file, &raw.http.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert_file: resolve(cert),
                key_file: resolve(key),
            }),
            (Some(_), None) | (None, Some(_)) => {
                let (set, unset) = if raw.http.tls_cert_file.is_some() {
                    ("tls_cert_file", "tls_key_file")
                } else {
                    ("tls_key_file", "tls_cert_file")
                };
                problems.push(format!(
                    "http.{set} is set without http.{unset}: HTTPS needs both (the PEM \
                     certificate chain and its private key); set neither for plain HTTP"
                ));
                None
            }
        };
        let sources = sources(
            raw.sources,
            &resolve,
            |k| std::env::var(k).ok(),
            &mut problems,
        );
        let eventhubs_alerts = match raw.notify.eventhubs {
            None => None,
            Some(e) => match crate::sinks::eventhubs::EventHubsNotifyConfig::from_raw(e, |k| {
                std::env::var(k).ok()
            }) {
                Ok(c) => Some(c),
                Err(p) => {
                    problems.extend(p.into_iter().map(|p| format!("notify.eventhubs: {p}")));
                    None
                }
            },
        };
        let d = raw.diagnostics;
        if d.max_rows == 0 || d.max_age_days == 0 || d.every_secs == 0 {
            problems.push(
                "diagnostics.max_rows, max_age_days and every_secs must be positive".to_owned(),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("; ")));
        }
        Ok(Config {
            store: store.expect("a store without problems is resolved"),
            engine: raw.engine,
            pipeline: raw.pipeline,
            sources,
            rules: raw
                .rules
                .into_iter()
                .map(|r| RuleConfig {
                    path: resolve(&r.path),
                    enabled: r.enabled,
                    params: r.params,
                })
                .collect(),
            console: raw.notify.console,
            console_details: raw.notify.console_details,
            eventhubs_alerts,
            listen: raw.http.listen,
            tls,
            analytics: raw.analytics.map(|a| AnalyticsConfig {
                path: resolve(&a.path),
            }),
            archive: raw.archive.map(|mut a| {
                a.resolve_paths(base);
                a
            }),
            retention,
            diagnostics: raw.diagnostics,
        })
    }
}

/// The validated `[[sources]]`: each checked (problems prefixed with `sources[i]`), names
/// unique. `env` reads the variables the sources name (`std::env::var` outside tests).
fn sources(
    raw: Vec<RawSource>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<SourceConfig> {
    let mut out: Vec<SourceConfig> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let mut kind = "mqtt";
        let built = match s {
            RawSource::File(f) => Ok(SourceConfig::File(
                crate::sources::file::FileSourceConfig::from_raw(f, resolve),
            )),
            RawSource::Mqtt(m) => {
                crate::sources::mqtt::MqttSourceConfig::from_raw(m, &env, resolve)
                    .map(SourceConfig::Mqtt)
            }
            RawSource::EventHubs(e) => {
                kind = "eventhubs";
                crate::sources::eventhubs::EventHubsSourceConfig::from_raw(e, &env)
                    .map(SourceConfig::EventHubs)
            }
        };
        match built {
            Ok(c) => {
                if out.iter().any(|o| o.name() == c.name()) {
                    problems.push(format!(
                        "sources[{i}]: another source is named {:?}: give each a distinct `name`",
                        c.name()
                    ));
                }
                out.push(c);
            }
            Err(p) => problems.extend(
                p.into_iter()
                    .map(|p| format!("sources[{i}] (kind = \"{kind}\"): {p}")),
            ),
        }
    }
    out
}

/// MySQL's validated config: the options checked and the URL read from the environment variable
/// they name (`env` is `std::env::var` outside tests).
fn mysql_store(
    options: MySqlOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreConfig, Vec<String>> {
    let mut problems = options.problems();
    if problems.is_empty() {
        match env(&options.url_env) {
            None => problems.push(format!(
                "store.url_env: environment variable {} is not set; it holds the MySQL URL, \
                 e.g. mysql://user:password@host:3306/glucoguard?ssl-mode=required",
                options.url_env
            )),
            Some(url) => match MySqlUrl::parse(&url) {
                Ok(url) => return Ok(StoreConfig::Mysql { url, options }),
                Err(e) => problems.push(format!("${}: {e}", options.url_env)),
            },
        }
    }
    Err(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config_and_resolves_paths() {
        let raw: RawConfig = toml::from_str(
            r#"
            [store]
            kind = "sqlite"
            path = "data/gg.db"
            [engine]
            call_timeout_ms = 100
            [pipeline]
            max_batch = 64
            [[sources]]
            kind = "file"
            path = "in.jsonl"
            [[rules]]
            path = "/abs/rule.wasm"
            params = { high_mg_dl = 120.0 }
            "#,
        )
        .unwrap();
        let c = Config::validate(raw, Path::new("/etc/gg")).unwrap();
        assert!(
            matches!(&c.store, StoreConfig::Sqlite { path, options } if path == Path::new("/etc/gg/data/gg.db") && options.durable_on_power_loss)
        );
        assert_eq!(c.engine.call_timeout_ms, 100);
        assert_eq!(c.pipeline.max_batch, 64);
        assert!(
            matches!(&c.sources[..], [SourceConfig::File(f)] if f.path == Path::new("/etc/gg/in.jsonl") && f.name == "file:/etc/gg/in.jsonl"),
            "{:?}",
            c.sources
        );
        assert_eq!(c.rules[0].params["high_mg_dl"], ParamValue::Float(120.0));
        assert!(c.rules[0].enabled);
    }

    #[test]
    fn mysql_store_reads_its_url_from_the_named_environment_variable() {
        let raw: RawConfig = toml::from_str(
            r#"
            [store]
            kind = "mysql"
            url_env = "GG_DB_URL"
            max_connections = 4
            acquire_timeout_secs = 3
            startup_timeout_secs = 120
            "#,
        )
        .unwrap();
        let RawStore::Mysql(options) = raw.store else {
            panic!("mysql store expected")
        };
        assert_eq!(options.max_connections, 4);
        assert_eq!(
            options.idle_timeout_secs,
            MySqlOptions::default().idle_timeout_secs
        );
        let env = |k: &str| {
            (k == "GG_DB_URL")
                .then(|| "mysql://gg:s3cret@db:3306/glucoguard?ssl-mode=required".to_owned())
        };
        let store = mysql_store(options.clone(), env).unwrap();
        assert!(matches!(&store, StoreConfig::Mysql { url, .. } if url.endpoint() == "db:3306"));
        assert!(!format!("{store:?}").contains("s3cret"), "{store:?}");

        let missing = mysql_store(options.clone(), |_| None)
            .unwrap_err()
            .join("; ");
        assert!(missing.contains("GG_DB_URL is not set"), "{missing}");
        let bad = mysql_store(options, |_| Some("mysql://gg:s3cret@db:3306".to_owned()))
            .unwrap_err()
            .join("; ");
        assert!(
            bad.contains("no database") && !bad.contains("s3cret"),
            "{bad}"
        );

        let alias: RawConfig = toml::from_str("[store]\nkind = \"mariadb\"").unwrap();
        assert!(matches!(alias.store, RawStore::Mysql(o) if o == MySqlOptions::default()));
        assert!(
            toml::from_str::<RawConfig>("[store]\nkind = \"mysql\"\nurl = \"mysql://x\"").is_err()
        );
        let raw: RawConfig =
            toml::from_str("[store]\nkind = \"mysql\"\nmax_connections = 0").unwrap();
        let e = Config::validate(raw, Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("store.max_connections"), "{e}");
    }

    #[test]
    fn analytics_archive_and_retention_sections() {
        let raw: RawConfig = toml::from_str(
            r#"
            [analytics]
            path = "data/gg.duckdb"
            [archive]
            max_age_secs = 5
            [archive.backend]
            kind = "local"
            path = "archive"
            [retention]
            raw_readings_days = 90
            "#,
        )
        .unwrap();
        let c = Config::validate(raw, Path::new("/srv/gg")).unwrap();
        assert_eq!(
            c.analytics.unwrap().path,
            Path::new("/srv/gg/data/gg.duckdb")
        );
        let archive = c.archive.unwrap();
        assert_eq!(archive.max_age_secs, 5);
        assert!(matches!(
            &archive.backend,
            crate::archive::Backend::Local { path } if path == Path::new("/srv/gg/archive")
        ));
        let r = c.retention.unwrap();
        assert_eq!(r.max_age, std::time::Duration::from_secs(90 * 86_400));
        assert_eq!(r.every, std::time::Duration::from_secs(3600));

        let defaults = Config::validate(RawConfig::default(), Path::new(".")).unwrap();
        assert!(defaults.analytics.is_none() && defaults.archive.is_none());
        assert!(defaults.retention.is_none());

        let raw: RawConfig = toml::from_str("[retention]\nraw_readings_days = 0").unwrap();
        let e = Config::validate(raw, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at least 1") && e.contains("needs an [archive]"),
            "{e}"
        );
    }

    #[test]
    fn refuses_turning_the_epoch_deadline_off_in_a_file() {
        let raw: RawConfig = toml::from_str("[engine]\nepoch_deadline = false").unwrap();
        let e = Config::validate(raw, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("engine.epoch_deadline = false is refused") && e.contains("benchmarks"),
            "{e}"
        );
        let raw: RawConfig = toml::from_str("[engine]\nepoch_deadline = true").unwrap();
        assert!(
            Config::validate(raw, Path::new("."))
                .unwrap()
                .engine
                .epoch_deadline
        );
    }

    #[test]
    fn console_details_are_off_unless_asked_for() {
        let c = Config::validate(RawConfig::default(), Path::new(".")).unwrap();
        assert!(c.console && !c.console_details);
        let raw: RawConfig = toml::from_str("[notify]\nconsole_details = true").unwrap();
        let c = Config::validate(raw, Path::new(".")).unwrap();
        assert!(c.console && c.console_details);
    }

    /// `PRAGMA synchronous` of a store opened from `toml`: 2 is FULL, 1 is NORMAL.
    async fn synchronous_of(toml: &str) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let raw: RawConfig = toml::from_str(toml).unwrap();
        let c = Config::validate(raw, dir.path()).unwrap();
        let StoreConfig::Sqlite { path, options } = c.store else {
            panic!("sqlite store expected")
        };
        let store = crate::store::sqlite::SqliteStore::open_with(&path, options)
            .await
            .unwrap();
        // Every pooled connection is opened with the same pragmas; ask a few of them.
        let mut values = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool().acquire().await.unwrap();
            values.push(
                sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap(),
            );
        }
        assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
        values[0]
    }

    #[tokio::test]
    async fn sqlite_syncs_every_commit_unless_durability_on_power_loss_is_given_up() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        assert_eq!(synchronous_of("").await, FULL);
        assert_eq!(
            synchronous_of("[store]\nkind = \"sqlite\"\npath = \"g.db\"").await,
            FULL
        );
        assert_eq!(
            synchronous_of(
                "[store]\nkind = \"sqlite\"\npath = \"g.db\"\ndurable_on_power_loss = false"
            )
            .await,
            NORMAL
        );
        // `open` keeps the safe default.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("o.db"))
            .await
            .unwrap();
        let v: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(v, FULL);
    }

    #[test]
    fn sources_of_each_kind_parse_and_unknown_kinds_or_fields_are_refused() {
        let raw: RawConfig = toml::from_str(
            r#"
            [[sources]]
            kind = "file"
            path = "in.jsonl"
            [[sources]]
            kind = "mqtt"
            url = "mqtts://broker.example:8884"
            client_id = "gg-host-1"
            topic_prefix = "site-a"
            username_env = "GG_MQTT_USER"
            password_env = "GG_MQTT_PASSWORD"
            ca_file = "ca.pem"
            session_expiry_secs = 3600
            receive_maximum = 64
            [[sources]]
            kind = "mqtt"
            name = "plain"
            url = "mqtt://127.0.0.1"
            client_id = "gg-host-2"
            "#,
        )
        .unwrap();
        let env = |k: &str| match k {
            "GG_MQTT_USER" => Some("host-1".to_owned()),
            "GG_MQTT_PASSWORD" => Some("s3cret".to_owned()),
            _ => None,
        };
        let resolve = |p: &Path| Path::new("/etc/gg").join(p);
        let mut problems = Vec::new();
        let s = sources(raw.sources, &resolve, env, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let [
            SourceConfig::File(f),
            SourceConfig::Mqtt(m),
            SourceConfig::Mqtt(plain),
        ] = &s[..]
        else {
            panic!("a file and two mqtt sources expected: {s:?}")
        };
        assert_eq!(f.path, Path::new("/etc/gg/in.jsonl"));
        assert_eq!(
            (m.name.as_str(), m.host.as_str(), m.port, m.tls),
            ("mqtt:gg-host-1", "broker.example", 8884, true)
        );
        assert_eq!(m.ca_file.as_deref(), Some(Path::new("/etc/gg/ca.pem")));
        assert_eq!(
            m.credentials.as_ref().map(|c| c.username.as_str()),
            Some("host-1")
        );
        assert_eq!((m.session_expiry_secs, m.receive_maximum), (3600, 64));
        assert_eq!(
            m.topic_filters(),
            ["site-a/glucose/+".to_owned(), "site-a/device/+".to_owned()]
        );
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "the password never prints"
        );
        assert_eq!(
            (plain.name.as_str(), plain.port, plain.tls),
            ("plain", 1883, false)
        );
        assert_eq!(plain.topic_prefix, "glucoguard");
        assert!(plain.credentials.is_none());

        let e = toml::from_str::<RawConfig>("[[sources]]\nkind = \"kafka\"\npath = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `kafka`") && e.contains("`file`") && e.contains("`mqtt`"),
            "{e}"
        );
        let e = toml::from_str::<RawConfig>(
            "[[sources]]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nclient_id = \"c\"\npassword = \"x\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `password`"), "{e}");
        let e = toml::from_str::<RawConfig>("[[sources]]\nkind = \"file\"\npaht = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `paht`"), "{e}");
        assert!(toml::from_str::<RawConfig>("[[sources]]\npath = \"x\"").is_err());

        // Every bad value is reported, named by its source and field.
        let raw: RawConfig = toml::from_str(
            r#"
            [[sources]]
            kind = "mqtt"
            url = "mqtt://user:pw@h"
            client_id = ""
            topic_prefix = "a/#"
            username_env = "GG_UNSET"
            session_expiry_secs = 0
            max_packet_bytes = 1000
            [[sources]]
            kind = "mqtt"
            url = "mqtt://h"
            client_id = "c"
            ca_file = "ca.pem"
            [[sources]]
            kind = "file"
            name = "dup"
            path = "a"
            [[sources]]
            kind = "file"
            name = "dup"
            path = "b"
            "#,
        )
        .unwrap();
        let e = Config::validate(raw, Path::new("."))
            .unwrap_err()
            .to_string();
        for expected in [
            "sources[0] (kind = \"mqtt\"): url",
            "username_env",
            "client_id must be",
            "topic_prefix \"a/#\"",
            "GG_UNSET is not set",
            "session_expiry_secs = 0",
            "max_packet_bytes",
            "sources[1] (kind = \"mqtt\"): ca_file is only used with an mqtts:// url",
            "sources[3]: another source is named \"dup\"",
        ] {
            assert!(e.contains(expected), "{expected:?} missing in: {e}");
        }
    }

    #[test]
    fn eventhubs_sources_and_the_alerts_hub_parse_and_bad_values_are_named() {
        let conn =
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=secret";
        let env = |k: &str| (k == "GG_EH").then(|| conn.to_owned());
        let raw: RawConfig = toml::from_str(
            r#"
            [[sources]]
            kind = "eventhubs"
            connection_string_env = "GG_EH"
            consumer_group = "host"
            start = "latest"
            [[sources]]
            kind = "eventhubs"
            name = "bad"
            connection_string_env = "GG_UNSET"
            endpoint = "http://x"
            start = "middle"
            glucose_hub = "same"
            device_hub = "same"
            [notify.eventhubs]
            connection_string_env = "GG_EH"
            endpoint = "amqp://127.0.0.1:5672"
            "#,
        )
        .unwrap();
        let mut problems = Vec::new();
        let built = sources(raw.sources, &|p: &Path| p.to_path_buf(), env, &mut problems);
        let SourceConfig::EventHubs(c) = &built[0] else {
            panic!("{built:?}")
        };
        assert_eq!(c.name, "eventhubs:host");
        assert_eq!(c.hubs, ["glucose_readings", "device_readings"]);
        assert_eq!(c.start, crate::sources::eventhubs::StartAt::Latest);
        assert_eq!(c.connection_string.expose(), conn);
        assert!(!format!("{c:?}").contains("secret"), "Debug hides the key");
        let all = problems.join("; ");
        for expected in [
            "sources[1] (kind = \"eventhubs\"): connection_string_env: environment variable GG_UNSET is not set",
            "endpoint \"http://x\"",
            "start \"middle\"",
            "glucose_hub and device_hub must differ",
        ] {
            assert!(all.contains(expected), "{expected:?} missing in: {all}");
        }
        let n = crate::sinks::eventhubs::EventHubsNotifyConfig::from_raw(
            raw.notify.eventhubs.unwrap(),
            env,
        )
        .unwrap();
        assert_eq!(n.hub, "alerts");
        assert_eq!(n.endpoint.as_deref(), Some("amqp://127.0.0.1:5672"));
        assert!(
            toml::from_str::<RawConfig>(
                "[notify.eventhubs]\nconnection_string_env = \"X\"\nbogus = 1"
            )
            .is_err()
        );
    }

    #[test]
    fn a_load_balanced_eventhubs_source_takes_its_blob_key_from_the_environment_and_checks_intervals()
     {
        let conn =
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=secret";
        let env = |k: &str| match k {
            "GG_EH" => Some(conn.to_owned()),
            "GG_BLOB" => Some("blobsecret".to_owned()),
            _ => None,
        };
        let raw: RawConfig = toml::from_str(
            r#"
            [[sources]]
            kind = "eventhubs"
            connection_string_env = "GG_EH"
            balance_interval_ms = 500
            ownership_expiration_secs = 3
            [sources.checkpoint_store]
            account = "acct"
            container = "eh"
            key_env = "GG_BLOB"
            [[sources]]
            kind = "eventhubs"
            name = "bad"
            connection_string_env = "GG_EH"
            balance_interval_ms = 5000
            ownership_expiration_secs = 5
            [sources.checkpoint_store]
            account = "acct"
            container = "eh"
            key_env = "GG_UNSET_BLOB"
            [[sources]]
            kind = "eventhubs"
            name = "both"
            connection_string_env = "GG_EH"
            [sources.checkpoint_store]
            account = "acct"
            container = "eh"
            key_env = "GG_BLOB"
            sas_env = "GG_BLOB"
            "#,
        )
        .unwrap();
        let mut problems = Vec::new();
        let built = sources(raw.sources, &|p: &Path| p.to_path_buf(), env, &mut problems);
        let SourceConfig::EventHubs(c) = &built[0] else {
            panic!("{built:?}")
        };
        let b = c
            .balanced
            .as_ref()
            .expect("a checkpoint store makes it load-balanced");
        assert_eq!(b.store.container, "eh");
        assert_eq!(b.secret.expose(), "blobsecret");
        assert_eq!(b.interval, std::time::Duration::from_millis(500));
        assert_eq!(b.expiration, std::time::Duration::from_secs(3));
        assert!(
            !format!("{c:?}").contains("blobsecret"),
            "Debug hides the key"
        );
        let all = problems.join("; ");
        for expected in [
            "ownership_expiration_secs must be longer than balance_interval_ms",
            "checkpoint_store: environment variable GG_UNSET_BLOB is not set",
            "checkpoint_store: give exactly one of key_env and sas_env",
        ] {
            assert!(all.contains(expected), "{expected:?} missing in: {all}");
        }
        assert!(
            toml::from_str::<RawConfig>(
                "[[sources]]\nkind = \"eventhubs\"\nconnection_string_env = \"X\"\n[sources.checkpoint_store]\naccount = \"a\"\ncontainer = \"c\"\nbogus = 1"
            )
            .is_err(),
            "unknown checkpoint store fields are refused"
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<RawConfig>("[engine]\nmax_memory = 1").is_err());
        let raw: RawConfig = toml::from_str("[pipeline]\nmax_batch = 0").unwrap();
        let e = Config::validate(raw, Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("max_batch"));
    }
}
