//! HTTPS from the binary, for operators without a reverse proxy: loads the certificate chain
//! and key named by `[http] tls_cert_file` / `tls_key_file` into a rustls [`ServerConfig`]
//! and serves the router over plain HTTP or TLS with the same graceful shutdown.
//!
//! rustls runs on the *ring* provider, passed explicitly, because the workspace builds rustls
//! with ring only (through sqlx): no process-wide default provider is installed or needed,
//! and neither aws-lc-rs nor OpenSSL is linked.

use crate::config::TlsFiles;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a client has to complete the TLS handshake. Handshakes run in their own task, so
/// a slow or silent client never holds up the accept loop; this bounds what it holds on to.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used. Messages name the file and the reason, never
/// the file's content: a key's bytes must not reach a log or a terminal.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "certificate {} and key {} cannot be used together: {reason}",
        cert.display(),
        key.display()
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Loads the PEM certificate chain (leaf first) and private key (PKCS#8, PKCS#1 RSA or SEC1
/// EC) into a server config for HTTP/1.1 over TLS 1.2 or 1.3. Checks that the key belongs to
/// the leaf certificate, so a mismatch is refused at start rather than at the first client.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(&files.cert_file)?;
    let key = read_private_key(&files.key_file)?;
    let unusable = |reason: String| TlsError::Unusable {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        reason,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| unusable(e.to_string()))?;
    // Only HTTP/1.1 is served (the workspace builds axum and hyper with `http1` alone): say so
    // to clients that negotiate, so none tries h2 on this connection.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A PEM parse error in our words: `pem::Error`'s own text can quote a line or a byte of the
/// file, and for the key file that would be key material.
fn pem_reason(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no {what} found in the PEM file"),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        pem::Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        pem::Error::Io(e) => e.to_string(),
        _ => "not a valid PEM file".to_owned(),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(pem_reason(&e, "CERTIFICATE section")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no CERTIFICATE section found in the PEM file".to_owned(),
        ));
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        path: path.to_owned(),
        reason: pem_reason(
            &e,
            "unencrypted private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section; \
             an encrypted key must be decrypted first)",
        ),
    })
}

/// Serves `router` on `listener` until `shutdown` completes: plain HTTP through
/// [`axum::serve`] when `tls` is `None`, HTTPS otherwise. Either way, once `shutdown`
/// completes the listener is closed, requests in flight are answered, idle connections are
/// closed, and this returns when every connection has ended.
///
/// Over TLS each connection is handed to its own task at once: the handshake (bounded by
/// [`HANDSHAKE_TIMEOUT`]) never holds up accepting others, and a failed one only ends that
/// connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            serve_tls(listener, router, config, shutdown).await;
            Ok(())
        }
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // Connections that got past the handshake: told to finish their request and close.
    let graceful = GracefulShutdown::new();
    // Connections still in the handshake: told to give up (they have no request to finish).
    let (stop_handshakes, handshakes_stopped) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        // Taken before the task starts, so a shutdown from now on waits for this connection.
        let watcher = graceful.watcher();
        let mut stopped = handshakes_stopped.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    // The client's fault or the network's, not the server's: debug only, and
                    // without the peer's address or anything it sent.
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(
                            limit_secs = HANDSHAKE_TIMEOUT.as_secs(),
                            "tls handshake timed out"
                        );
                        return;
                    }
                },
                _ = stopped.changed() => return,
            };
            // The timer enables hyper's header read timeout, so a client that completed the
            // handshake and then stalls does not keep its connection forever.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "https connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_handshakes.send(());
    graceful.shutdown().await;
}

/// What axum's `serve` does on an accept error: a connection that failed before we took it
/// is no reason to pause; anything else (out of file descriptors) is logged and retried after
/// a second rather than in a busy loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "https accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
