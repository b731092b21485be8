//! HTTPS from the binary: a host started with `[http] tls_cert_file` / `tls_key_file` answers
//! a client that trusts its (test-time, self-signed) certificate, gives plain HTTP and
//! untrusting clients no answer without ever stopping, lets requests in flight finish on
//! shutdown, and refuses a half or broken TLS configuration with the path and the reason.

use crate::support::sqlite_host_config;
use glucoguard::app::{self, App};
use glucoguard::config::{Config, TlsFiles};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every network step, so a regression fails instead of hanging the suite.
const STEP: Duration = Duration::from_secs(15);

/// A self-signed certificate for `localhost` and 127.0.0.1, made for this test run.
struct Identity {
    cert_pem: String,
    key_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

fn identity() -> Identity {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Identity {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        cert_der: c.cert.der().clone(),
    }
}

/// Writes the identity's PEM files into `dir`.
fn write_files(dir: &Path, id: &Identity) -> TlsFiles {
    let files = TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    std::fs::write(&files.cert_file, &id.cert_pem).unwrap();
    std::fs::write(&files.key_file, &id.key_pem).unwrap();
    files
}

fn host_config(dir: &Path, tls: Option<TlsFiles>) -> Config {
    Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        tls,
        ..sqlite_host_config(&dir.join("g.db"), 64, vec![])
    }
}

/// A host serving HTTPS with a fresh identity; the identity is returned for clients.
async fn tls_host(dir: &Path) -> (App, Identity) {
    let id = identity();
    let files = write_files(dir, &id);
    let app = app::start(&host_config(dir, Some(files))).await.unwrap();
    assert!(app.http_server.as_ref().unwrap().tls());
    (app, id)
}

/// A TLS client (ring, as the host) that trusts exactly `roots`.
fn connector(roots: &[rustls::pki_types::CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(STEP, connector(roots).connect(name, tcp))
        .await
        .expect("handshake in time")
}

/// Everything the peer sends until it closes (a reset counts as the end).
async fn read_all(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut out))
        .await
        .expect("the peer closes in time");
    out
}

/// Sends one HTTP/1.1 request that closes the connection and returns the whole answer.
async fn request(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    method: &str,
    path: &str,
) -> String {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_all(stream).await).into_owned()
}

async fn https_health(addr: SocketAddr, id: &Identity) -> String {
    let mut s = tls_connect(addr, std::slice::from_ref(&id.cert_der))
        .await
        .expect("a client trusting the certificate completes the handshake");
    request(&mut s, "GET", "/health").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_200_over_https_to_a_client_trusting_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (app, id) = tls_host(dir.path()).await;
    let addr = app.http.unwrap();
    let answer = https_health(addr, &id).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"healthy\":true"), "{answer}");
    crate::support::stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_files_the_host_serves_plain_http_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&host_config(dir.path(), None)).await.unwrap();
    assert!(!app.http_server.as_ref().unwrap().tls());
    let mut tcp = TcpStream::connect(app.http.unwrap()).await.unwrap();
    let answer = request(&mut tcp, "GET", "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    crate::support::stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (app, id) = tls_host(dir.path()).await;
    let addr = app.http.unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let answer = request(&mut tcp, "GET", "/health").await;
    assert!(
        !answer.contains("HTTP/"),
        "plain HTTP got an HTTP answer: {answer:?}"
    );
    // And the server goes on serving HTTPS.
    let answer = https_health(addr, &id).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    crate::support::stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_trusting_the_certificate_fails_the_handshake_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (app, id) = tls_host(dir.path()).await;
    let addr = app.http.unwrap();

    // A client holding a connection without ever starting the handshake does not hold up
    // the others: handshakes run beside the accept loop.
    let _silent = TcpStream::connect(addr).await.unwrap();

    // Trusting another certificate only: the server's is from an unknown issuer.
    let stranger = identity();
    for _ in 0..3 {
        let e = tls_connect(addr, std::slice::from_ref(&stranger.cert_der))
            .await
            .expect_err("an untrusting client must not complete the handshake");
        assert!(
            e.to_string().contains("UnknownIssuer")
                || e.to_string().contains("invalid peer certificate"),
            "{e}"
        );
        // Trusting nothing at all.
        assert!(tls_connect(addr, &[]).await.is_err());
    }
    for _ in 0..3 {
        let answer = https_health(addr, &id).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    crate::support::stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_https_request_in_flight_finish_and_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, id) = tls_host(dir.path()).await;
    let addr = app.http.unwrap();

    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = tls_connect(addr, std::slice::from_ref(&id.cert_der))
        .await
        .unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(STEP, idle.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // A request in flight: headers sent, the body only half.
    let body = crate::support::glucose_json("tls-1", 1, crate::support::T0, 120.0);
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    let mut busy = tls_connect(addr, std::slice::from_ref(&id.cert_der))
        .await
        .unwrap();
    let token = crate::support::token(&app).await;
    let headers = format!(
        "POST /api/ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    busy.write_all(headers.as_bytes()).await.unwrap();
    busy.write_all(head).await.unwrap();
    busy.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let server = app.http_server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts after the stop"
    );
    assert!(
        !stopping.is_finished(),
        "the shutdown did not wait for the request in flight"
    );

    busy.write_all(tail).await.unwrap();
    busy.flush().await.unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut busy).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        tokio::time::timeout(STEP, stopping).await.unwrap().unwrap(),
        "the server stopped within its limit"
    );
    // The idle connection was closed by the server.
    let rest = read_all(&mut idle).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
    crate::support::stop(app).await;
}

#[test]
fn the_config_refuses_a_certificate_without_a_key_and_a_key_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gg.toml");
    for (set, unset) in [
        ("tls_cert_file", "tls_key_file"),
        ("tls_key_file", "tls_cert_file"),
    ] {
        std::fs::write(
            &path,
            format!("[http]\nlisten = \"127.0.0.1:8443\"\n{set} = \"x.pem\"\n"),
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("http.{set} is set without http.{unset}")),
            "{e}"
        );
    }
    std::fs::write(
        &path,
        "[http]\ntls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/etc/gg/key.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert_file: dir.path().join("tls/cert.pem"),
            key_file: "/etc/gg/key.pem".into(),
        })
    );
    let c = Config::validate(Default::default(), dir.path()).unwrap();
    assert_eq!(c.tls, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_unreadable_or_invalid_tls_files_with_the_path_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity();
    let good = write_files(dir.path(), &id);
    let other = identity();
    // The base64 lines of the keys: none may appear in an error.
    let secrets: Vec<String> = [&id.key_pem, &other.key_pem]
        .iter()
        .flat_map(|k| {
            k.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned)
        })
        .collect();
    let write = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let cases = [
        (
            TlsFiles {
                cert_file: dir.path().join("missing.pem"),
                ..good.clone()
            },
            vec!["missing.pem", "cannot read"],
        ),
        (
            TlsFiles {
                key_file: write("garbage.pem", "not a key at all\n"),
                ..good.clone()
            },
            vec!["garbage.pem", "no unencrypted private key"],
        ),
        (
            // The certificate where the key should be.
            TlsFiles {
                key_file: good.cert_file.clone(),
                ..good.clone()
            },
            vec!["cert.pem", "no unencrypted private key"],
        ),
        (
            // The key where the certificate should be.
            TlsFiles {
                cert_file: good.key_file.clone(),
                ..good.clone()
            },
            vec!["key.pem", "no CERTIFICATE"],
        ),
        (
            TlsFiles {
                key_file: write(
                    "broken.pem",
                    &id.key_pem.replacen(&secrets[0][..8], "!!!!!!!!", 1),
                ),
                ..good.clone()
            },
            vec!["broken.pem", "not valid base64"],
        ),
        (
            TlsFiles {
                key_file: write("other.pem", &other.key_pem),
                ..good.clone()
            },
            vec!["cannot be used together", "other.pem"],
        ),
    ];
    for (files, expected) in cases {
        let sub = tempfile::tempdir().unwrap();
        let e = app::start(&host_config(sub.path(), Some(files)))
            .await
            .expect_err("a broken TLS configuration must not start")
            .to_string();
        for x in expected {
            assert!(e.contains(x), "{x:?} not in {e}");
        }
        for s in &secrets {
            assert!(!e.contains(s.as_str()), "key material in {e}");
        }
        // Refused before anything started: no store file was created.
        assert!(!sub.path().join("g.db").exists(), "{e}");
    }
}
