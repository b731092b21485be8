//! Publishers: where streamed events go. JSON lines to a writer (stdout or a file), a JSON array per batch over HTTP
//! (the host's `POST /api/ingest`), or an in-memory collector; Event Hubs and MQTT implement the same trait later.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::event::Event;

/// A destination for batches of events. `publish` is called with batches in emission order; `flush` at the end of a
/// stream (and whenever the caller needs everything durable). Partitioned transports key by [`Event::partition_key`].
pub trait Publisher {
    /// Sends one batch. An error stops the stream.
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()>;

    /// Makes everything published so far durable or delivered.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<P: Publisher + ?Sized> Publisher for &mut P {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        (**self).publish(events)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        (**self).publish(events)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
}

/// Writes one JSON object per line.
#[derive(Debug)]
pub struct JsonLinesPublisher<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonLinesPublisher<W> {
    /// Wraps a writer (buffered internally).
    pub fn new(writer: W) -> Self {
        JsonLinesPublisher {
            out: BufWriter::with_capacity(64 * 1024, writer),
        }
    }

    /// Flushes and returns the writer.
    pub fn into_inner(self) -> anyhow::Result<W> {
        self.out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flushing JSON lines: {}", e.error()))
    }
}

impl JsonLinesPublisher<Box<dyn Write + Send>> {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        JsonLinesPublisher::new(Box::new(io::stdout()))
    }

    /// Creates (or truncates) a file.
    pub fn create(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(JsonLinesPublisher::new(Box::new(file)))
    }

    /// `-` means standard output, anything else a file path.
    pub fn to_path_or_stdout(target: &str) -> anyhow::Result<Self> {
        if target == "-" {
            Ok(Self::stdout())
        } else {
            Self::create(target)
        }
    }
}

impl<W: Write> Publisher for JsonLinesPublisher<W> {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            event
                .write_json_line(&mut self.out)
                .context("writing JSON lines")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing JSON lines")
    }
}

/// Keeps every event in memory (tests, in-process demos).
#[derive(Debug, Default)]
pub struct CollectPublisher {
    /// Everything published, in order.
    pub events: Vec<Event>,
    /// Size of each batch received.
    pub batch_sizes: Vec<usize>,
}

impl Publisher for CollectPublisher {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        self.batch_sizes.push(events.len());
        self.events.extend_from_slice(events);
        Ok(())
    }
}

/// Limits for [`HttpPublisher`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Attempts per request, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Largest number of events in one request; bigger batches are split.
    pub max_events_per_request: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_events_per_request: 1000,
        }
    }
}

/// POSTs each batch as a JSON array (`Content-Type: application/json`) to a URL, e.g. the host's `/api/ingest`.
///
/// Retries connection failures, timeouts, 408, 429 and 5xx with exponential backoff, up to
/// [`HttpConfig::max_attempts`]; any other non-2xx status fails at once. Plain `http://` only (no TLS stack).
#[derive(Debug)]
pub struct HttpPublisher {
    agent: ureq::Agent,
    url: String,
    config: HttpConfig,
    requests: u64,
    retries: u64,
    /// Sent as `Authorization: Bearer …` (the host's ingest and admin need a token).
    bearer: Option<String>,
}

impl HttpPublisher {
    /// A publisher with the default limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_config(url, HttpConfig::default())
    }

    /// A publisher with explicit limits.
    pub fn with_config(url: impl Into<String>, config: HttpConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .build()
            .into();
        HttpPublisher {
            agent,
            url: url.into(),
            config,
            requests: 0,
            retries: 0,
            bearer: None,
        }
    }

    /// Authenticates every request with this API token (`gg_…`), when given.
    pub fn with_bearer(mut self, token: Option<String>) -> Self {
        self.bearer = token.filter(|t| !t.is_empty());
        self
    }

    /// Successful requests so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// POSTs one JSON document (e.g. dimension data to the host's `/api/dimensions`) with the
    /// same retry policy as reading batches.
    pub fn post_document(&mut self, body: &[u8]) -> anyhow::Result<()> {
        self.post(body, 0)
    }

    fn post(&mut self, body: &[u8], events: usize) -> anyhow::Result<()> {
        let attempts = self.config.max_attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.retries += 1;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
            let mut request = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json");
            if let Some(token) = &self.bearer {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let result = request.send(body);
            match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        self.requests += 1;
                        return Ok(());
                    }
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    let snippet: String = text.chars().take(300).collect();
                    let retryable = status == 408 || status == 429 || status >= 500;
                    if !retryable {
                        bail!(
                            "POST {} rejected {events} events with HTTP {status}: {snippet}",
                            self.url
                        );
                    }
                    last_error = format!("HTTP {status}: {snippet}");
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!(
            "POST {} failed after {attempts} attempts: {last_error}",
            self.url
        )
    }
}

impl Publisher for HttpPublisher {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for chunk in events.chunks(self.config.max_events_per_request.max(1)) {
            let body = serde_json::to_vec(chunk).context("serialising batch")?;
            self.post(&body, chunk.len())?;
        }
        Ok(())
    }
}
