//! Assembles a running host from a validated [`Config`]: store, engine, rules, pipeline,
//! notifiers, sources and the HTTP listener. `glucoguard run`, `glucoguard demo` and the
//! integration tests all start the system through here, so they exercise the same wiring.

use crate::analytics::{Analytics, AnalyticsSink};
use crate::archive::ArchiveSink;
use crate::config::{AnalyticsConfig, Config, StoreConfig};
use crate::engine::Engine;
use crate::pipeline::rules::{RuleError, RuleManager};
use crate::pipeline::{Pipeline, PipelineHandle};
use crate::sinks::{ConsoleNotifier, LiveFeed, Notifier, StorageSink};
use crate::sources::{RunningSource, SourceError};
use crate::store::mysql::MySqlStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineSetupError),
    #[error("rule {path}: {source}")]
    Rule { path: String, source: RuleError },
    #[error("cannot read rule {path}: {source}")]
    ReadRule {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    #[error("analytics: {0}")]
    Analytics(#[from] crate::analytics::AnalyticsError),
    #[error("archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("https: {0}")]
    Tls(#[from] crate::admin::tls::TlsError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// What went wrong in an ordered shutdown ([`App::shutdown`]).
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the pipeline did not drain: {0}")]
    Pipeline(String),
    #[error("{} source(s) did not finish cleanly: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Sources(Vec<SourceError>),
}

/// How long a source has, after the pipeline drained, for its final acknowledgements.
pub const SOURCE_FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a notifier with its own task (the alerts hub) has, after the pipeline drained,
/// to send what it queued.
pub const NOTIFIER_FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A started host.
pub struct App {
    pub handle: PipelineHandle,
    pub store: Arc<dyn Store>,
    pub live: LiveFeed,
    pub pipeline: JoinHandle<()>,
    /// The configured sources (`[[sources]]`), in config order, attached to `handle`.
    pub sources: Vec<RunningSource>,
    /// Where the HTTP listener is bound, when the config asked for one.
    pub http: Option<std::net::SocketAddr>,
    /// The HTTP server, to stop gracefully once the pipeline drained.
    pub http_server: Option<HttpServer>,
    /// The scheduled retention job, when `[retention]` is configured.
    pub retention: Option<JoinHandle<()>>,
    /// The job that bounds dead letters and rule faults (`[diagnostics]`).
    pub diagnostics: JoinHandle<()>,
    /// The DuckDB analytics sink, when `[analytics]` is configured: the dashboard's queries.
    pub analytics: Option<Arc<AnalyticsSink>>,
    /// The archive sink, when `[archive]` is configured.
    pub archive: Option<Arc<ArchiveSink>>,
    /// Notifiers' own tasks (the alerts hub): each ends once the pipeline dropped its
    /// notifier and it sent what was queued.
    pub notifier_tasks: Vec<JoinHandle<()>>,
}

/// The running HTTP listener (ingest and the admin API).
#[derive(Debug)]
pub struct HttpServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
    tls: bool,
}

impl HttpServer {
    /// Whether this listener speaks HTTPS (`[http] tls_cert_file` / `tls_key_file`), e.g.
    /// for the `Secure` attribute of cookies.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Stops accepting connections, answers the requests in flight and closes idle
    /// connections; waits at most `limit` for that. `false` if requests were still open then
    /// (the server is aborted).
    pub async fn shutdown(self, limit: std::time::Duration) -> bool {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(limit, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Stops the host in order: every source stops taking input, the pipeline processes what
    /// is queued (each item durable in the store, then acknowledged) and the storage sinks
    /// take the rest from the store and flush; then each source gives its final
    /// acknowledgement or checkpoint and ends (an MQTT source's last PUBACKs, then its
    /// DISCONNECT); then the HTTP server stops.
    pub async fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.handle.shutdown().await;
        match (&mut self.pipeline).await {
            Ok(()) => {}
            Err(e) => return Err(ShutdownError::Pipeline(e.to_string())),
        }
        self.finish_sources(SOURCE_FINISH_TIMEOUT).await?;
        self.finish_notifiers().await;
        if let Some(http) = self.http_server.take() {
            http.shutdown(std::time::Duration::from_secs(10)).await;
        }
        Ok(())
    }

    /// Once the pipeline drained (and dropped its notifiers): waits, bounded, for the
    /// notifiers with a task of their own (the alerts hub) to send what they queued.
    pub async fn finish_notifiers(&mut self) {
        for mut task in self.notifier_tasks.drain(..) {
            if tokio::time::timeout(NOTIFIER_FINISH_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "a notifier did not send its queued alerts in time; the store has them"
                );
                task.abort();
            }
        }
    }

    /// The last step for the sources, once the pipeline drained: waits up to `limit` each for
    /// its final acknowledgement and end.
    pub async fn finish_sources(
        &mut self,
        limit: std::time::Duration,
    ) -> Result<(), ShutdownError> {
        let mut failed = Vec::new();
        for s in self.sources.drain(..) {
            s.stop();
            if let Err(e) = s.finish(limit).await {
                tracing::warn!(error = %e, "source did not finish cleanly; what it had not acknowledged comes again");
                failed.push(e);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ShutdownError::Sources(failed))
        }
    }
}

/// Where `cargo xtask build-plugins` puts the built rule components: `GLUCOGUARD_PLUGIN_DIR`
/// if set, else `<CARGO_TARGET_DIR or the workspace's target>/wasm-plugins/wasm32-wasip2/release`.
/// For development tools (tests, benchmarks); the service itself is told its rule files.
pub fn built_plugin_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("GLUCOGUARD_PLUGIN_DIR") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm-plugins/wasm32-wasip2/release")
}

pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Sqlite { path, options } => {
            Arc::new(SqliteStore::open_with(path, *options).await?)
        }
        StoreConfig::Mysql { url, options } => Arc::new(MySqlStore::open(url, options).await?),
    })
}

/// Opens the DuckDB analytics file and catches it up with what the OLTP store holds and it
/// lacks, before the pipeline feeds it.
pub async fn open_analytics(
    config: &AnalyticsConfig,
    store: &dyn Store,
) -> Result<AnalyticsSink, StartError> {
    let path = config.path.clone();
    let analytics = tokio::task::spawn_blocking(move || Analytics::open(path))
        .await
        .expect("opening DuckDB does not panic")?;
    let caught = analytics.catch_up(store).await?;
    tracing::info!(
        path = %config.path.display(),
        glucose_readings = caught.glucose_readings,
        device_readings = caught.device_readings,
        alerts = caught.alerts,
        "analytics caught up with the store"
    );
    Ok(AnalyticsSink::new(analytics))
}

/// The sources' upstream positions, in the OLTP store (beside the sink cursors).
struct StoreCheckpoints(Arc<dyn Store>);

impl StoreCheckpoints {
    /// The store's key: `src:` and the source's key, or a digest of it when longer than the
    /// column allows (64 ASCII bytes).
    fn key(key: &str) -> String {
        let k = format!("src:{key}");
        if k.len() <= 64 && k.is_ascii() {
            return k;
        }
        use sha2::Digest;
        format!(
            "src:{}",
            &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..56]
        )
    }
}

impl crate::sources::Checkpoints for StoreCheckpoints {
    fn load<'a>(
        &'a self,
        key: &'a str,
    ) -> crate::sources::BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            self.0
                .source_checkpoint(&Self::key(key))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> crate::sources::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .put_source_checkpoint(&Self::key(key), value)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Registers the rules a config names: uploads each (idempotent) and sets its state.
pub async fn register_rules(manager: &RuleManager, config: &Config) -> Result<(), StartError> {
    let by = crate::store::accounts::Actor::system("config");
    for r in &config.rules {
        let path = r.path.display().to_string();
        let wasm = std::fs::read(&r.path).map_err(|source| StartError::ReadRule {
            path: path.clone(),
            source,
        })?;
        let info = manager
            .upload(&wasm, &by)
            .await
            .map_err(|source| StartError::Rule {
                path: path.clone(),
                source,
            })?;
        if r.enabled {
            match manager
                .enable(&info.name, Some(&info.version), Some(r.params.clone()), &by)
                .await
            {
                Ok(_) => {}
                // A quarantined version must not keep the other rules from running: start
                // without it and say so loudly (also in `/api/stats`).
                Err(RuleError::Quarantined { rule, reason }) => {
                    // The reason may quote the rule's output (patient data): it is in `/api/stats`,
                    // not in the log.
                    let _ = reason;
                    tracing::warn!(rule = %rule, path = %path, "rule from the config is quarantined and will not run until released (`glucoguard rules release {rule}`; the reason is in /api/stats)");
                    continue;
                }
                Err(source) => {
                    return Err(StartError::Rule {
                        path: path.clone(),
                        source,
                    });
                }
            }
        } else {
            manager.disable(&info.name, &by).await.ok();
        }
        tracing::info!(rule = %info.rule_ref(), enabled = r.enabled, "rule registered from config");
    }
    Ok(())
}

/// Starts the host. The pipeline runs until `handle.shutdown()`.
pub async fn start(config: &Config) -> Result<App, StartError> {
    start_with(config, Vec::new()).await
}

/// Makes ring rustls's process-wide default crypto provider. The workspace builds rustls
/// on ring, and the Event Hubs client adds aws-lc-rs: with two providers compiled in,
/// rustls picks neither by itself, and a client that asks for the default (the Event Hubs
/// and object_store clients do) would panic. Idempotent; the first call wins.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Starts the host with extra storage sinks beside the ones the config names.
pub async fn start_with(
    config: &Config,
    extra_storage: Vec<Arc<dyn StorageSink>>,
) -> Result<App, StartError> {
    install_crypto_provider();
    // Checked before anything starts, so a bad certificate or key costs nothing. Whether the
    // HTTP listener is HTTPS is `http_tls.is_some()` (also `HttpServer::tls`).
    let http_tls = match &config.tls {
        Some(files) => Some(crate::admin::tls::load_server_config(files)?),
        None => None,
    };
    let mut storage = extra_storage;
    let store = open_store(&config.store).await?;
    let analytics = match &config.analytics {
        Some(a) => Some(Arc::new(open_analytics(a, store.as_ref()).await?)),
        None => None,
    };
    if let Some(a) = &analytics {
        storage.push(a.clone());
    }
    let archive = match &config.archive {
        Some(a) => Some(Arc::new(ArchiveSink::connect(a).await?)),
        None => None,
    };
    if let Some(a) = &archive {
        storage.push(a.clone());
    }
    let retention = config
        .retention
        .map(|r| crate::retention::spawn(store.clone(), r));
    let diagnostics = crate::retention::spawn_diagnostics(store.clone(), config.diagnostics);
    let engine = Engine::new(config.engine.clone())?;
    let manager = Arc::new(RuleManager::new(engine, store.clone()));
    register_rules(&manager, config).await?;
    // Room for several full batches of alerts (1024 readings × a few alerts each), so a
    // subscriber a moment behind (the admin UI) loses none; about 3 MiB when full.
    let live = LiveFeed::new(16 * 1024);
    let mut notifiers: Vec<Arc<dyn Notifier>> = vec![Arc::new(live.clone())];
    if config.console {
        notifiers.push(Arc::new(ConsoleNotifier::new(config.console_details)));
    }
    let mut notifier_tasks = Vec::new();
    if let Some(c) = &config.eventhubs_alerts {
        let (n, task) = crate::sinks::eventhubs::EventHubsNotifier::start(c.clone());
        tracing::info!(hub = %c.hub, "alerts are published to Event Hubs");
        notifiers.push(Arc::new(n));
        notifier_tasks.push(task);
    }
    let (pipeline, handle) = Pipeline::new(
        config.pipeline.clone(),
        store.clone(),
        manager,
        notifiers,
        storage,
    )
    .await?;
    let pipeline = tokio::spawn(pipeline.run());
    let mut sources = Vec::with_capacity(config.sources.len());
    let checkpoints: Arc<dyn crate::sources::Checkpoints> =
        Arc::new(StoreCheckpoints(store.clone()));
    for c in &config.sources {
        let source = match c.build(handle.input(), checkpoints.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Stop what started (attached below as it started), in order, then report.
                handle.shutdown().await;
                let _ = pipeline.await;
                return Err(e.into());
            }
        };
        tracing::info!(
            source = source.name(),
            kind = source.kind(),
            "source started"
        );
        handle.attach_source(source.control());
        sources.push(source);
    }
    let (http, http_server) = match config.listen {
        None => (None, None),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?;
            let admin_store: Arc<dyn crate::store::AdminStore> = store.clone();
            let mut admin =
                crate::admin::AdminState::new(admin_store, handle.clone(), http_tls.is_some())
                    .with_live(live.clone());
            if let Some(a) = &analytics {
                admin = admin.with_analytics(a.clone());
            }
            let router = crate::admin::router(admin, handle.embedded_source("http"));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let tls = http_tls.is_some();
            let task = tokio::spawn(async move {
                // Only an explicit stop ends the server: dropping the `App` leaves it running.
                let signal = async move {
                    if stopped.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                match crate::admin::tls::serve(listener, router, http_tls, signal).await {
                    Ok(()) => tracing::info!("http server stopped"),
                    Err(e) => tracing::error!(error = %e, "http server failed"),
                }
            });
            let url = format!("{}://{bound}", if tls { "https" } else { "http" });
            tracing::info!(%url, "http listening: POST /api/ingest, GET /health, GET /ready, GET /api/stats, GET /api/sinks, POST /api/dimensions");
            (Some(bound), Some(HttpServer { stop, task, tls }))
        }
    };
    Ok(App {
        handle,
        store,
        live,
        pipeline,
        sources,
        http,
        http_server,
        retention,
        diagnostics,
        analytics,
        archive,
        notifier_tasks,
    })
}
