//! A JSON-lines file source: one reading per line, fed with backpressure; blank lines are
//! skipped. It reports how many lines were acknowledged so callers can wait for delivery.

use super::{Ack, SourceItem};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(Debug, Default)]
pub struct FileProgress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
}

/// Streams `path` into `tx` and returns when the file is read. Progress is shared so a caller
/// can tell when everything sent was acknowledged.
pub async fn stream_file(
    path: PathBuf,
    tx: mpsc::Sender<SourceItem>,
    progress: Arc<FileProgress>,
) -> std::io::Result<()> {
    let origin: Arc<str> = Arc::from(format!("file:{}", path.display()).as_str());
    let file = tokio::fs::File::open(&path).await?;
    let mut lines = BufReader::new(file).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let p = progress.clone();
        let item = SourceItem {
            payload: line.into_bytes(),
            origin: origin.clone(),
            ack: Ack::new(move || {
                p.acked.fetch_add(1, Ordering::Relaxed);
            }),
        };
        progress.sent.fetch_add(1, Ordering::Relaxed);
        if tx.send(item).await.is_err() {
            break;
        }
    }
    Ok(())
}
