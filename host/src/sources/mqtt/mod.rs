//! The MQTT source (`[[sources]] kind = "mqtt"`): an MQTT 5 client (rumqttc) subscribed at
//! QoS 1 to `{prefix}/glucose/+` (one topic per patient) and `{prefix}/device/+` (one per
//! device), on a persistent session (`clean_start = false` and a session expiry interval,
//! under a stable client id), with manual acknowledgements: a message's PUBACK goes to the
//! broker only after the pipeline's `Ack` for its item fired (the item is durable in the
//! store), and only in arrival order ([`acks`]). So a host that dies gets every message it
//! had not made durable again from the broker, and never acknowledges one it might lose.
//!
//! Each payload is one JSON reading as HTTP ingest takes it; the pipeline validates it, and
//! whatever it refuses (malformed JSON, an invalid reading, a payload over its size limit)
//! becomes a dead letter with origin `mqtt:{topic}`. The client accepts packets up to
//! `max_packet_bytes` (told to the broker at connect; MQTT 5 brokers discard larger ones
//! instead of sending them), which must exceed the pipeline's own limit so that oversized
//! readings reach the dead letters.
//!
//! Backpressure: when the pipeline's queue is full the source stops polling the connection;
//! the broker sends at most `receive_maximum` unacknowledged messages, so what the host holds
//! is bounded. The connection is re-established with capped exponential backoff; warnings
//! name the error, never a payload.
//!
//! Only this module names rumqttc (`tests/it/architecture.rs`).

/// The in-order acknowledgement queue, shared with the Event Hubs source.
pub use super::acks;
mod run;

use super::{RunningSource, SourceError, SourceItem};
use rumqttc::v5::MqttOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `[[sources]] kind = "mqtt"`, as written. Secrets are not in it: `username_env` and
/// `password_env` name environment variables.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttSource {
    /// Default: `mqtt:<client_id>`.
    pub name: Option<String>,
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub url: String,
    /// Stable across restarts: the broker keeps the session (and the messages not yet
    /// acknowledged) under it.
    pub client_id: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// PEM certificates trusted for `mqtts://` instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long the broker keeps the session (and queues messages) while the host is away.
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
    /// Unacknowledged messages the broker may send at once.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// Upper bound of the wait between reconnection attempts.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Largest packet accepted (and announced to the broker).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: u32,
}

fn default_prefix() -> String {
    "glucoguard".to_owned()
}
fn default_session_expiry() -> u32 {
    86_400
}
fn default_receive_maximum() -> u16 {
    1024
}
fn default_keep_alive() -> u16 {
    30
}
fn default_reconnect_max() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_max_packet() -> u32 {
    1 << 20
}

/// MQTT's largest packet (the remaining-length field's limit).
const MQTT_MAX_PACKET: u32 = 268_435_455;

/// A username and password read from the environment. `Debug` never prints the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A validated MQTT source.
#[derive(Debug, Clone)]
pub struct MqttSourceConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (rustls on ring).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub client_id: String,
    pub topic_prefix: String,
    pub credentials: Option<Credentials>,
    pub session_expiry_secs: u32,
    pub receive_maximum: u16,
    pub keep_alive: Duration,
    pub reconnect_max: Duration,
    pub connect_timeout: Duration,
    pub max_packet_bytes: u32,
}

impl MqttSourceConfig {
    /// A source with the defaults for `url`, `client_id` and `topic_prefix`, no credentials.
    pub fn new(url: &str, client_id: &str, topic_prefix: &str) -> Result<Self, String> {
        let raw = RawMqttSource {
            name: None,
            url: url.to_owned(),
            client_id: client_id.to_owned(),
            topic_prefix: topic_prefix.to_owned(),
            username_env: None,
            password_env: None,
            ca_file: None,
            session_expiry_secs: default_session_expiry(),
            receive_maximum: default_receive_maximum(),
            keep_alive_secs: default_keep_alive(),
            reconnect_max_secs: default_reconnect_max(),
            connect_timeout_secs: default_connect_timeout(),
            max_packet_bytes: default_max_packet(),
        };
        Self::from_raw(raw, |_| None, Path::to_path_buf).map_err(|p| p.join("; "))
    }

    /// Validates a raw source: `env` reads the credentials' variables (`std::env::var`
    /// outside tests), `resolve` makes `ca_file` absolute. Every problem is reported, each
    /// prefixed with the field it is about.
    pub fn from_raw(
        raw: RawMqttSource,
        env: impl Fn(&str) -> Option<String>,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let endpoint = match parse_url(&raw.url) {
            Ok(e) => Some(e),
            Err(e) => {
                problems.push(format!("url {:?}: {e}", raw.url));
                None
            }
        };
        if raw.client_id.is_empty() || raw.client_id.len() > 256 {
            problems.push(
                "client_id must be 1 to 256 bytes; keep it stable: the broker keeps the \
                 session and its unacknowledged messages under it"
                    .to_owned(),
            );
        }
        if let Err(e) = check_prefix(&raw.topic_prefix) {
            problems.push(format!("topic_prefix {:?}: {e}", raw.topic_prefix));
        }
        let read = |field: &str, var: &Option<String>, problems: &mut Vec<String>| match var {
            None => None,
            Some(var) => match env(var) {
                Some(v) => Some(v),
                None => {
                    problems.push(format!("{field}: environment variable {var} is not set"));
                    None
                }
            },
        };
        let username = read("username_env", &raw.username_env, &mut problems);
        let password = read("password_env", &raw.password_env, &mut problems);
        if raw.password_env.is_some() && raw.username_env.is_none() {
            problems.push("password_env needs username_env".to_owned());
        }
        let credentials =
            username.map(|u| Credentials::new(u, password.clone().unwrap_or_default()));
        if raw.session_expiry_secs == 0 {
            problems.push(
                "session_expiry_secs = 0 ends the session at every disconnect: messages \
                 published while the host is away would be lost"
                    .to_owned(),
            );
        }
        if raw.receive_maximum == 0 {
            problems.push("receive_maximum must be within 1..=65535".to_owned());
        }
        if raw.keep_alive_secs < 5 {
            problems.push("keep_alive_secs must be at least 5".to_owned());
        }
        if raw.reconnect_max_secs == 0 || raw.connect_timeout_secs == 0 {
            problems
                .push("reconnect_max_secs and connect_timeout_secs must be positive".to_owned());
        }
        let min_packet = (crate::model::parse::MAX_PAYLOAD_BYTES + 1024) as u32;
        if raw.max_packet_bytes < min_packet || raw.max_packet_bytes > MQTT_MAX_PACKET {
            problems.push(format!(
                "max_packet_bytes must be within {min_packet}..={MQTT_MAX_PACKET}: above the \
                 pipeline's payload limit, so that oversized readings become dead letters \
                 instead of being discarded by the broker"
            ));
        }
        let tls = endpoint.as_ref().is_some_and(|e| e.tls);
        if raw.ca_file.is_some() && endpoint.is_some() && !tls {
            problems.push("ca_file is only used with an mqtts:// url".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let endpoint = endpoint.expect("a url without problems parsed");
        Ok(MqttSourceConfig {
            name: raw
                .name
                .unwrap_or_else(|| format!("mqtt:{}", raw.client_id)),
            host: endpoint.host,
            port: endpoint.port,
            tls,
            ca_file: raw.ca_file.as_deref().map(resolve),
            client_id: raw.client_id,
            topic_prefix: raw.topic_prefix,
            credentials,
            session_expiry_secs: raw.session_expiry_secs,
            receive_maximum: raw.receive_maximum,
            keep_alive: Duration::from_secs(u64::from(raw.keep_alive_secs)),
            reconnect_max: Duration::from_secs(raw.reconnect_max_secs),
            connect_timeout: Duration::from_secs(raw.connect_timeout_secs),
            max_packet_bytes: raw.max_packet_bytes,
        })
    }

    /// The two subscriptions: glucose per patient, telemetry per device.
    pub fn topic_filters(&self) -> [String; 2] {
        [
            format!("{}/glucose/+", self.topic_prefix),
            format!("{}/device/+", self.topic_prefix),
        ]
    }

    fn setup_error(&self, message: impl Into<String>) -> SourceError {
        SourceError::Setup {
            name: self.name.clone(),
            message: message.into(),
        }
    }

    /// The client's options: persistent session, manual acknowledgements, the limits.
    fn options(&self) -> Result<MqttOptions, SourceError> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(self.session_expiry_secs))
            .set_receive_maximum(Some(self.receive_maximum))
            .set_max_packet_size(Some(self.max_packet_bytes))
            .set_keep_alive(self.keep_alive)
            .set_connection_timeout(self.connect_timeout.as_secs())
            .set_manual_acks(true);
        if let Some(c) = &self.credentials {
            o.set_credentials(c.username.clone(), c.password.clone());
        }
        if self.tls {
            let config = self.tls_config()?;
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
        Ok(o)
    }

    /// rustls on the ring provider (the workspace builds no other), trusting `ca_file` or,
    /// without one, the system's roots.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, SourceError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect())
                    .map_err(|e| {
                        self.setup_error(format!(
                            "ca_file {}: not readable PEM certificates ({})",
                            path.display(),
                            pem_reason(&e)
                        ))
                    })?;
                if certs.is_empty() {
                    return Err(self
                        .setup_error(format!("ca_file {}: no certificate in it", path.display())));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        self.setup_error(format!("ca_file {}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(self.setup_error(
                        "mqtts:// without ca_file needs the system's trusted roots, and none \
                         were found (install ca-certificates or set ca_file)",
                    ));
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| self.setup_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Connects in the background and feeds `input` until stopped.
    pub fn build(&self, input: mpsc::Sender<SourceItem>) -> Result<RunningSource, SourceError> {
        let options = self.options()?;
        Ok(run::start(self.clone(), options, input))
    }
}

/// A PEM error in our words (its own text can quote the file).
fn pem_reason(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(_) => "cannot read the file",
        Error::NoItemsFound => "no certificate in it",
        _ => "malformed PEM",
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    tls: bool,
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 in brackets), nothing else: no
/// credentials (they come from the environment), path or query.
fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err("expected mqtt://host[:port] or mqtts://host[:port]".to_owned());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(
            "credentials do not belong in the url: name environment variables in \
             username_env and password_env"
                .to_owned(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err("a broker url has no path or query: mqtt://host[:port]".to_owned());
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in an IPv6 address".to_owned())?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| "expected :port after the IPv6 address".to_owned())?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("port {p:?} is not within 1..=65535"))?,
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        tls,
    })
}

fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("must not be empty");
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err("must not contain the wildcards + or # (the source subscribes below it)");
    }
    if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err("must not begin or end with / or contain an empty level");
    }
    if prefix.starts_with('$') {
        return Err("topics beginning with $ are the broker's");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = |tls, host: &str, port| Endpoint {
            host: host.to_owned(),
            port,
            tls,
        };
        assert_eq!(
            parse_url("mqtt://127.0.0.1"),
            Ok(e(false, "127.0.0.1", 1883))
        );
        assert_eq!(
            parse_url("mqtts://broker.example:8884/"),
            Ok(e(true, "broker.example", 8884))
        );
        assert_eq!(
            parse_url("mqtts://broker.example"),
            Ok(e(true, "broker.example", 8883))
        );
        assert_eq!(parse_url("mqtt://[::1]:1884"), Ok(e(false, "::1", 1884)));
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/topic",
            "mqtt://h?x=1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(
            parse_url("mqtt://u:secret@h")
                .unwrap_err()
                .contains("username_env")
        );
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("glucoguard").is_ok());
        assert!(check_prefix("site/a").is_ok());
        for bad in ["", "a/+", "#", "/a", "a/", "a//b", "$SYS"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = Credentials::new("host-1", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
