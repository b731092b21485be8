//! The archive's configuration (`[archive]` in the TOML file) and the object store it names.
//! Secrets never live here: the Azure account key or SAS token is read from the environment
//! variable the config names.

use super::ArchiveError;
use object_store::ObjectStore;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `[archive]`: where the Parquet files go and when they are rolled.
///
/// ```toml
/// [archive]
/// prefix = "glucoguard"
/// max_age_secs = 10
/// [archive.backend]
/// kind = "azure"
/// account = "ggarchive"
/// container = "archive"
/// key_env = "GLUCOGUARD_ARCHIVE_KEY"   # or sas_env = "GLUCOGUARD_ARCHIVE_SAS"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    pub backend: Backend,
    /// Folder inside the store every object key starts with; empty for the store's root.
    pub prefix: String,
    /// A partition is rolled once it buffers this many rows.
    pub max_rows: usize,
    /// … or this many bytes (an estimate of the rows in memory; Parquet is several times
    /// smaller).
    pub max_bytes: u64,
    /// … or once its oldest row has waited this long. Sources are acknowledged only after the
    /// upload, so this bounds the archive's share of acknowledgement latency.
    pub max_age_secs: u64,
    /// Everything buffered or uploading, estimated: a `write` beyond it waits (backpressure).
    pub max_buffer_bytes: u64,
    /// First wait after a failed roll; doubles on each failure up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// One request to the object store gives up after this long (and the roll is retried).
    pub request_timeout_secs: u64,
    /// How long `flush` (shutdown) waits for the last uploads before giving up; what is not
    /// uploaded then is not acknowledged, so the sources send it again.
    pub flush_timeout_secs: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            backend: Backend::default(),
            prefix: String::new(),
            max_rows: 100_000,
            max_bytes: 32 << 20,
            max_age_secs: 10,
            max_buffer_bytes: 256 << 20,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            request_timeout_secs: 60,
            flush_timeout_secs: 120,
        }
    }
}

/// Where the archive lives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Backend {
    /// A folder on this machine (created if missing); relative to the config file.
    Local { path: PathBuf },
    /// A container in Azure Blob Storage (or Azurite).
    Azure(AzureBackend),
}

impl Default for Backend {
    fn default() -> Self {
        Backend::Local {
            path: PathBuf::from("archive"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBackend {
    /// Storage account name.
    pub account: String,
    /// Blob container; it must exist.
    pub container: String,
    /// Environment variable holding the account key (base64) …
    #[serde(default)]
    pub key_env: Option<String>,
    /// … or a SAS token (`sv=…&sig=…`) with read, write, create and list permissions.
    #[serde(default)]
    pub sas_env: Option<String>,
    /// Blob endpoint including the account for path-style endpoints, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1` or a sovereign cloud's
    /// `https://<account>.blob.core.chinacloudapi.cn`. Default:
    /// `https://<account>.blob.core.windows.net`.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl ArchiveConfig {
    /// What is wrong with this configuration, one line per problem (empty when valid). Does
    /// not look at the environment; [`build_store`] does.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.prefix.is_empty()
            && (self.prefix.starts_with('/')
                || self.prefix.ends_with('/')
                || self
                    .prefix
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
                || object_store::path::Path::parse(&self.prefix).is_err())
        {
            p.push(format!(
                "archive.prefix {:?} must be empty or folder names separated by `/`, without \
                 leading or trailing `/`, `.` or `..`",
                self.prefix
            ));
        }
        if self.max_rows == 0 {
            p.push("archive.max_rows must be at least 1".to_owned());
        }
        if self.max_bytes < 1024 {
            p.push("archive.max_bytes must be at least 1024".to_owned());
        }
        if self.max_age_secs == 0 || self.max_age_secs > 3600 {
            p.push("archive.max_age_secs must be within 1..=3600".to_owned());
        }
        if self.max_buffer_bytes < self.max_bytes || self.max_buffer_bytes > u64::from(u32::MAX) {
            p.push(
                "archive.max_buffer_bytes must be at least archive.max_bytes and at most 4 GiB"
                    .to_owned(),
            );
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            p.push(
                "archive.retry_initial_ms must be positive and archive.retry_max_ms at least as \
                 large"
                    .to_owned(),
            );
        }
        if self.request_timeout_secs == 0 {
            p.push("archive.request_timeout_secs must be positive".to_owned());
        }
        if self.flush_timeout_secs == 0 {
            p.push("archive.flush_timeout_secs must be positive".to_owned());
        }
        match &self.backend {
            Backend::Local { path } => {
                if path.as_os_str().is_empty() {
                    p.push("archive.backend.path must name a folder".to_owned());
                }
            }
            Backend::Azure(a) => {
                if a.account.is_empty()
                    || !a
                        .account
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    p.push(format!(
                        "archive.backend.account {:?} must be a storage account name (lowercase \
                         letters and digits)",
                        a.account
                    ));
                }
                let c = &a.container;
                if c.len() < 3
                    || c.len() > 63
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                    || c.starts_with('-')
                    || c.ends_with('-')
                    || c.contains("--")
                {
                    p.push(format!(
                        "archive.backend.container {c:?} must be 3–63 lowercase letters, digits \
                         and single hyphens"
                    ));
                }
                match (&a.key_env, &a.sas_env) {
                    (Some(_), Some(_)) | (None, None) => p.push(
                        "archive.backend needs exactly one of key_env (account key) and sas_env \
                         (SAS token): the name of the environment variable holding it"
                            .to_owned(),
                    ),
                    (Some(v), None) | (None, Some(v)) if v.trim().is_empty() => p.push(
                        "archive.backend.key_env / sas_env must name an environment variable"
                            .to_owned(),
                    ),
                    _ => {}
                }
                if let Some(e) = &a.endpoint
                    && !(e.starts_with("http://") || e.starts_with("https://"))
                {
                    p.push(format!(
                        "archive.backend.endpoint {e:?} must be an http:// or https:// URL"
                    ));
                }
            }
        }
        p
    }

    /// Resolves a relative local folder against `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Backend::Local { path } = &mut self.backend
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }

    pub(crate) fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
}

/// The object store the config names, secrets read from the process environment. Creates
/// the local folder if missing. Errors name the environment variable, never its value.
pub fn build_store(cfg: &ArchiveConfig) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    build_store_with(cfg, |k| std::env::var(k).ok())
}

/// [`build_store`] with the environment given (tests).
pub fn build_store_with(
    cfg: &ArchiveConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(ArchiveError::Config(problems.join("; ")));
    }
    match &cfg.backend {
        Backend::Local { path } => {
            std::fs::create_dir_all(path).map_err(|e| {
                ArchiveError::Config(format!(
                    "cannot create archive folder {}: {e}",
                    path.display()
                ))
            })?;
            let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| {
                ArchiveError::Config(format!("archive folder {}: {e}", path.display()))
            })?;
            Ok(Arc::new(fs))
        }
        Backend::Azure(a) => azure_store(
            a,
            Duration::from_secs(cfg.request_timeout_secs),
            "archive",
            env,
        )
        .map_err(ArchiveError::Config),
    }
}

/// A client for one Azure Blob container (the archive's, and the Event Hubs source's
/// checkpoint store): the account key or SAS token from the environment variable the config
/// names; `what` names the user in errors, which never quote the secret.
pub fn azure_store(
    a: &AzureBackend,
    timeout: Duration,
    what: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ObjectStore>, String> {
    // Few quick retries inside the client: the callers retry with their own, longer backoff
    // and keep everything meanwhile.
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: timeout,
    };
    let mut b = MicrosoftAzureBuilder::new()
        .with_account(&a.account)
        .with_container_name(&a.container)
        .with_retry(retry)
        .with_client_options(
            object_store::ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(5).min(timeout))
                .with_allow_http(
                    a.endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                ),
        );
    if let Some(endpoint) = &a.endpoint {
        b = b.with_endpoint(endpoint.trim_end_matches('/').to_owned());
    }
    let secret = |var: &str, kind: &str| {
        env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            format!("environment variable {var} is not set; it holds the {what}'s {kind}")
        })
    };
    if let Some(var) = &a.key_env {
        b = b.with_access_key(secret(var, "Azure storage account key")?);
    } else if let Some(var) = &a.sas_env {
        b = b.with_config(AzureConfigKey::SasKey, secret(var, "Azure SAS token")?);
    }
    let store = b.build().map_err(|e| {
        // Builder errors can quote a malformed key; say which variable, not what.
        let var = a.key_env.as_deref().or(a.sas_env.as_deref()).unwrap_or("");
        format!(
            "Azure {what} {}/{}: {} (check ${var})",
            a.account,
            a.container,
            describe_builder_error(&e)
        )
    })?;
    Ok(Arc::new(store))
}

/// A builder error without the values it may quote.
fn describe_builder_error(e: &object_store::Error) -> String {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("key") || text.to_ascii_lowercase().contains("sas") {
        "the key or SAS token is malformed".to_owned()
    } else {
        super::redact(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(toml_text: &str) -> ArchiveConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_are_a_local_folder_and_valid() {
        let c: ArchiveConfig = toml::from_str("").unwrap();
        assert_eq!(
            c.backend,
            Backend::Local {
                path: "archive".into()
            }
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let mut c = c;
        c.resolve_paths(Path::new("/etc/gg"));
        assert_eq!(
            c.backend,
            Backend::Local {
                path: "/etc/gg/archive".into()
            }
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ArchiveConfig>("max_age = 3").is_err());
        assert!(
            toml::from_str::<ArchiveConfig>("[backend]\nkind = \"local\"\npath = \"a\"\nx = 1")
                .is_err()
        );
        let c = azure(
            r#"
            prefix = "/x/"
            max_age_secs = 0
            [backend]
            kind = "azure"
            account = "Bad_Name"
            container = "a"
            key_env = "K"
            sas_env = "S"
            endpoint = "ftp://x"
            "#,
        );
        let p = c.problems().join("\n");
        for needle in [
            "archive.prefix",
            "max_age_secs",
            "account",
            "container",
            "exactly one of key_env",
            "endpoint",
        ] {
            assert!(p.contains(needle), "{needle} missing from {p}");
        }
    }

    #[test]
    fn a_missing_secret_names_its_variable_and_a_present_one_is_never_printed() {
        let c = azure(
            r#"
            [backend]
            kind = "azure"
            account = "ggarchive"
            container = "archive"
            key_env = "GG_ARCHIVE_KEY"
            "#,
        );
        let err = build_store_with(&c, |_| None).unwrap_err().to_string();
        assert!(err.contains("GG_ARCHIVE_KEY"), "{err}");
        let secret = "not-base64-$$$-s3cret";
        match build_store_with(&c, |_| Some(secret.to_owned())) {
            Ok(_) => {}
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains(secret), "{e}");
                assert!(e.contains("GG_ARCHIVE_KEY"), "{e}");
            }
        }
        let good = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        build_store_with(&c, |_| Some(good.to_owned())).unwrap();
    }
}
