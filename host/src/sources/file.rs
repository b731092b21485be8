//! A JSON-lines file source (`[[sources]] kind = "file"`): one reading per line, fed with
//! backpressure; blank lines are skipped. It reads the file once; its status counts the lines
//! handed over and acknowledged, so callers can wait for delivery. Nothing to checkpoint:
//! stopping it simply stops reading.

use super::{Ack, RunningSource, SourceError, SourceItem, SourceTaskSide};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// `[[sources]] kind = "file"`, raw.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSource {
    /// Default: `file:<path>`.
    pub name: Option<String>,
    pub path: PathBuf,
}

/// A validated file source: the path resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceConfig {
    pub name: String,
    pub path: PathBuf,
}

impl FileSourceConfig {
    /// A file source named after its path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        FileSourceConfig {
            name: format!("file:{}", path.display()),
            path,
        }
    }

    pub fn from_raw(raw: RawFileSource, resolve: impl Fn(&std::path::Path) -> PathBuf) -> Self {
        let path = resolve(&raw.path);
        let mut c = FileSourceConfig::new(path);
        if let Some(name) = raw.name {
            c.name = name;
        }
        c
    }

    /// Spawns the reader.
    pub fn build(&self, input: mpsc::Sender<SourceItem>) -> RunningSource {
        let (control, side) = super::control(&self.name, "file");
        let task = tokio::spawn(stream_file(self.clone(), input, side));
        RunningSource::new(control, task)
    }
}

/// Streams the file into `tx` until its end or a stop.
async fn stream_file(
    config: FileSourceConfig,
    tx: mpsc::Sender<SourceItem>,
    mut side: SourceTaskSide,
) -> Result<(), SourceError> {
    let origin: Arc<str> = Arc::from(format!("file:{}", config.path.display()).as_str());
    let read_error = |source: std::io::Error| SourceError::Read {
        name: config.name.clone(),
        path: config.path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&config.path)
        .await
        .map_err(read_error)?;
    side.status.taking_input.store(true, Ordering::Release);
    let mut lines = BufReader::new(file).lines();
    loop {
        // `next_line` and `send` are cancel-safe: a stop loses no line it handed over.
        let line = tokio::select! {
            biased;
            _ = side.stopped() => break,
            line = lines.next_line() => match line.map_err(read_error)? {
                Some(line) => line,
                None => break,
            },
        };
        if line.trim().is_empty() {
            continue;
        }
        let status = side.status.clone();
        let item = SourceItem {
            payload: line.into_bytes(),
            origin: origin.clone(),
            takeover: 0,
            ack: Ack::new(move || {
                status.acknowledged.fetch_add(1, Ordering::AcqRel);
            }),
        };
        side.status.received.fetch_add(1, Ordering::AcqRel);
        let sent = tokio::select! {
            biased;
            _ = side.stopped() => false,
            sent = tx.send(item) => sent.is_ok(),
        };
        if !sent {
            // Not handed over after all.
            side.status.received.fetch_sub(1, Ordering::AcqRel);
            break;
        }
    }
    side.close_intake();
    Ok(())
}
