//! Sources: where raw readings come from. Each source feeds [`SourceItem`]s into the
//! pipeline's bounded input queue and learns through the item's [`Ack`] when every store
//! that accepts it has made it durable; only then may it commit its position.
//!
//! Sources never import the engine, the sinks or the store.

pub mod file;
pub mod http;

use std::sync::Arc;
use tokio::sync::mpsc;

/// Called once when an item is durable. Dropping an unacknowledged `Ack` means "not delivered".
pub struct Ack(Option<Box<dyn FnOnce() + Send>>);

impl Ack {
    pub fn none() -> Self {
        Ack(None)
    }
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Ack(Some(Box::new(f)))
    }
    pub fn ack(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(pending)"
        } else {
            "Ack(none)"
        })
    }
}

/// One raw payload as it arrived, not yet validated.
#[derive(Debug)]
pub struct SourceItem {
    pub payload: Vec<u8>,
    /// Source name, recorded with dead letters.
    pub origin: Arc<str>,
    pub ack: Ack,
}

/// The embedded in-process source: a cloneable handle onto the pipeline's bounded queue.
/// `send` waits when the queue is full, so backpressure reaches the producer.
#[derive(Debug, Clone)]
pub struct EmbeddedSource {
    tx: mpsc::Sender<SourceItem>,
    origin: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
#[error("the pipeline has stopped")]
pub struct Closed;

impl EmbeddedSource {
    pub fn new(tx: mpsc::Sender<SourceItem>, origin: &str) -> Self {
        EmbeddedSource {
            tx,
            origin: Arc::from(origin),
        }
    }

    pub async fn send(&self, payload: Vec<u8>) -> Result<(), Closed> {
        self.send_with_ack(payload, Ack::none()).await
    }

    pub async fn send_with_ack(&self, payload: Vec<u8>, ack: Ack) -> Result<(), Closed> {
        self.tx
            .send(SourceItem {
                payload,
                origin: self.origin.clone(),
                ack,
            })
            .await
            .map_err(|_| Closed)
    }

    /// For producer threads outside the runtime (the simulator).
    pub fn blocking_send(&self, payload: Vec<u8>) -> Result<(), Closed> {
        self.tx
            .blocking_send(SourceItem {
                payload,
                origin: self.origin.clone(),
                ack: Ack::none(),
            })
            .map_err(|_| Closed)
    }
}
