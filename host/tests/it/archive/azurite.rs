//! Azurite, the Azure Storage emulator from npm (`npm ci` in the repository root), started per
//! test on a free port with a fresh folder, stopped and restarted on demand, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and its documented public key (not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const API_VERSION: &str = "2021-08-06";

pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    location: tempfile::TempDir,
}

fn binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/azurite-blob");
    assert!(
        bin.exists(),
        "Azurite is not installed: run `npm ci` in the repository root (looked for {})",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Azurite {
    /// Starts a fresh Azurite with the container `container` created.
    pub fn start(container: &str) -> Azurite {
        let mut a = Azurite {
            child: None,
            port: free_port(),
            location: tempfile::tempdir().unwrap(),
        };
        a.spawn();
        a.create_container(container);
        a
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1`: the path-style blob endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.location.path().join("azurite.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "Azurite is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.location.path())
            .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "Azurite exited ({status}) before listening on {}:\n{}",
                    self.port,
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Azurite did not listen on {} within 60 s:\n{}",
                self.port,
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process gracefully (SIGTERM, so it saves its metadata), then for sure.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same port and folder: the blobs written before are back.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Creates a container with a SharedKey-signed request (Azurite starts with none).
    pub fn create_container(&self, name: &str) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let date = chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            let to_sign = format!(
                "PUT\n{}x-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container",
                "\n".repeat(11)
            );
            let signature = base64_encode(&hmac_sha256(&base64_decode(KEY), to_sign.as_bytes()));
            let outcome = agent
                .put(format!("{}/{name}?restype=container", self.endpoint()))
                .header("x-ms-date", &date)
                .header("x-ms-version", API_VERSION)
                .header("Authorization", format!("SharedKey {ACCOUNT}:{signature}"))
                .send_empty();
            match outcome {
                Ok(mut r) if r.status().as_u16() == 201 || r.status().as_u16() == 409 => {
                    let _ = r.body_mut().read_to_string();
                    return;
                }
                other => {
                    let why = match other {
                        Ok(mut r) => format!(
                            "{}: {}",
                            r.status(),
                            r.body_mut().read_to_string().unwrap_or_default()
                        ),
                        Err(e) => e.to_string(),
                    };
                    assert!(
                        Instant::now() < deadline,
                        "cannot create container {name}: {why}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn hmac_and_base64_match_known_vectors() {
    // RFC 4231 test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    assert_eq!(base64_decode("Zm9vYmE="), b"fooba");
    assert_eq!(base64_encode(&base64_decode(KEY)), KEY);
}
