//! What one pipeline batch produced and makes durable: readings, alerts with their lifecycle
//! status, dead letters, rule faults and quarantines. The OLTP store writes it in one
//! transaction; storage sinks (analytics, archive) take the same value.

use super::{Alert, DeadLetter, EpochMs, Reading, RuleFault, RuleRef};
use serde::{Deserialize, Serialize};

/// Lifecycle state of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
    /// A repeat within the suppression interval: stored, not notified.
    Suppressed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Suppressed => "suppressed",
        }
    }
}

/// Everything one pipeline batch makes durable, written in one transaction.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub readings: Vec<Reading>,
    pub alerts: Vec<(Alert, AlertStatus)>,
    pub dead_letters: Vec<DeadLetter>,
    pub faults: Vec<RuleFault>,
    pub quarantined: Vec<(RuleRef, String)>,
    /// What versions in shadow would have raised: stored apart, never notified.
    pub shadow_alerts: Vec<Alert>,
    /// Receive time stamped on the rows.
    pub received_at_ms: EpochMs,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.alerts.is_empty()
            && self.dead_letters.is_empty()
            && self.faults.is_empty()
            && self.quarantined.is_empty()
            && self.shadow_alerts.is_empty()
    }
}

/// A keyset position in the order (received time, id). A page of rows "since" a cursor holds
/// the rows strictly after it; `Cursor::default()` starts at the beginning, and
/// `Cursor::at(t)` at the first row received at `t`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub received_at_ms: EpochMs,
    pub id: String,
}

impl Cursor {
    /// Just before the first row received at `received_at_ms` (ids are never empty).
    pub fn at(received_at_ms: EpochMs) -> Self {
        Cursor {
            received_at_ms,
            id: String::new(),
        }
    }
}

/// A downstream copy's position in each of the store's three streams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    pub glucose: Cursor,
    pub device: Cursor,
    pub alerts: Cursor,
}

impl FeedCursor {
    /// The same position in all three streams.
    pub fn uniform(at: Cursor) -> Self {
        FeedCursor {
            glucose: at.clone(),
            device: at.clone(),
            alerts: at,
        }
    }
}
