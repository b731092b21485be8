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
    }
}
