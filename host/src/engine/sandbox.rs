//! The sandbox a rule runs in: every limit in one place.
//!
//! Deny by default: the WASI context has no preopened directories, no environment, no
//! arguments, no network, a frozen clock and a seeded random source (so a rule stays a pure
//! function even if its standard library asks for time or randomness); stdout and stderr go
//! to a bounded per-call capture. Imports are checked against an allow-list at load, linear
//! memory is capped per instance, and each call runs under an epoch deadline.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// Interfaces a rule may import. Everything else (filesystem, sockets, HTTP, unknown
/// packages) is rejected when the rule is loaded, before it ever runs.
pub const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "glucoguard:rules/host@1.",
    "glucoguard:rules/types@1.",
    "wasi:io/",
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-",
    "wasi:clocks/wall-clock@",
    "wasi:clocks/monotonic-clock@",
    "wasi:random/",
];

/// Whether a component import name is on the allow-list.
pub fn import_allowed(name: &str) -> bool {
    ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Bytes of stdout/stderr kept per call; the rest is counted and dropped.
pub const CAPTURE_BYTES: usize = 8 * 1024;

/// The per-store state a rule instance sees through its imports.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryLimit,
    pub(crate) output: Capture,
    /// Rule name, for attributing its log lines.
    pub(crate) rule: Arc<str>,
    pub(crate) logs_left: u32,
    pub(crate) logs_per_call: u32,
}

impl HostState {
    pub fn new(rule: Arc<str>, max_memory_bytes: usize, logs_per_call: u32) -> Self {
        let output = Capture::default();
        let mut b = WasiCtx::builder();
        b.stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![
                0x5a, 0x17, 0xc3, 0x08,
            ]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![
                0x2b, 0x91, 0x4e, 0xd6,
            ]))
            .insecure_random_seed(0x6c75_636f_6775_6172);
        HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limits: MemoryLimit {
                max_bytes: max_memory_bytes,
                denied: false,
            },
            output,
            rule,
            logs_left: logs_per_call,
            logs_per_call,
        }
    }

    /// Resets the per-call budgets before a call.
    pub fn begin_call(&mut self) {
        self.logs_left = self.logs_per_call;
        self.limits.denied = false;
        self.output.take();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory growth and remembers a refusal, so a trap that follows can be
/// reported as a memory-limit fault rather than an anonymous `unreachable`.
pub struct MemoryLimit {
    pub max_bytes: usize,
    pub denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A clock stuck at the Unix epoch: rules must not depend on time other than event time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Bounded capture of a guest's stdout and stderr: keeps the first [`CAPTURE_BYTES`] of a
/// call and counts what it drops. Never fails a write, so chatty output cannot trap a rule.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn append(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAPTURE_BYTES.saturating_sub(c.bytes.len());
        let keep = room.min(data.len());
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += (data.len() - keep) as u64;
    }

    /// Takes what the guest wrote since the last call, as lossy UTF-8, noting truncation.
    pub fn take(&self) -> Option<String> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.bytes.is_empty() && c.dropped == 0 {
            return None;
        }
        let mut s = String::from_utf8_lossy(&c.bytes).into_owned();
        if c.dropped > 0 {
            s.push_str(&format!(" …[{} more bytes dropped]", c.dropped));
        }
        c.bytes.clear();
        c.dropped = 0;
        Some(s)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(import_allowed("wasi:io/streams@0.2.6"));
        assert!(import_allowed("glucoguard:rules/host@1.0.0"));
        assert!(import_allowed("wasi:cli/stderr@0.2.0"));
        assert!(!import_allowed("wasi:filesystem/preopens@0.2.0"));
        assert!(!import_allowed("wasi:sockets/tcp@0.2.0"));
        assert!(!import_allowed("wasi:http/outgoing-handler@0.2.0"));
        assert!(!import_allowed("glucoguard:rules/host@2.0.0"));
    }

    #[test]
    fn capture_is_bounded() {
        let c = Capture::default();
        c.append(&vec![b'x'; CAPTURE_BYTES + 10]);
        let s = c.take().unwrap();
        assert!(s.ends_with("…[10 more bytes dropped]"));
        assert!(c.take().is_none(), "take drains");
    }
}
