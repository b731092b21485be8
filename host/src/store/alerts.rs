//! Alerts and their lifecycle: listing with filters, one alert with its history, and the
//! open → acknowledged → resolved transitions, each recorded with who and a note. Written once
//! for every engine.

use super::accounts::{Audit, append_audit};
use super::rows::{self, Columns};
use super::sql::{Arg, SqlEngine, placeholders, q};
use super::{AlertStatus, BoxFuture, StoreError};
use crate::model::{Alert, EpochMs, now_ms};
use serde::{Deserialize, Serialize};

/// An alert with its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub status: AlertStatus,
    pub created_at_ms: EpochMs,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at_ms: Option<EpochMs>,
    pub resolved_by: Option<String>,
    pub resolved_at_ms: Option<EpochMs>,
}

/// One step of an alert's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub at_ms: EpochMs,
    pub actor: String,
    pub action: String,
    pub note: Option<String>,
}

/// What a person does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertAction {
    Acknowledge,
    Resolve,
    /// A note only; the status stays.
    Note,
}

impl AlertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Acknowledge => "acknowledged",
            AlertAction::Resolve => "resolved",
            AlertAction::Note => "note",
        }
    }
}

/// Which alerts to list, newest first. `patients` restricts to those patients (a
/// clinician's); `None` is every patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertFilter {
    pub patient_id: Option<u64>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub status: Option<String>,
    /// Event time at or after.
    pub from_ms: Option<EpochMs>,
    /// Event time before.
    pub to_ms: Option<EpochMs>,
    #[serde(skip)]
    pub patients: Option<Vec<u64>>,
    pub offset: Option<u32>,
    pub limit: Option<u32>,
}

pub trait AlertStore: Send + Sync + 'static {
    /// The newest `limit` alerts with their status.
    fn alerts(&self, limit: u32) -> BoxFuture<'_, Result<Vec<(Alert, AlertStatus)>, StoreError>>;

    fn list_alerts<'a>(
        &'a self,
        f: &'a AlertFilter,
    ) -> BoxFuture<'a, Result<Vec<AlertView>, StoreError>>;

    fn alert<'a>(
        &'a self,
        alert_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AlertView>, StoreError>>;

    /// Oldest first.
    fn alert_events<'a>(
        &'a self,
        alert_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AlertEvent>, StoreError>>;

    /// What a rule version in shadow would have raised, newest first.
    fn shadow_alerts<'a>(
        &'a self,
        rule: &'a crate::model::RuleRef,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Alert>, StoreError>>;

    /// Applies `action` by `actor`: acknowledging needs an open (or suppressed) alert,
    /// resolving one not yet resolved; anything else is a conflict naming the status. The
    /// lifecycle row, the event and the audit entry are one transaction.
    fn act_on_alert<'a>(
        &'a self,
        alert_id: &'a str,
        action: AlertAction,
        note: Option<&'a str>,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<AlertView, StoreError>>;
}

const VIEW: &str = "SELECT a.AlertID, a.ReadingID, a.PatientID, a.DeviceID, a.Kind, a.RuleName, a.RuleVersion, \
     a.Code, a.Severity, a.Message, a.Value, a.TimestampMs, a.CreatedAtMs, l.Status, l.AcknowledgedBy, \
     l.AcknowledgedAtMs, l.ResolvedBy, l.ResolvedAtMs FROM Alerts a JOIN AlertLifecycle l ON l.AlertID = a.AlertID";

fn view(row: &(impl Columns + ?Sized)) -> Result<AlertView, StoreError> {
    let (alert, status) = rows::alert_with_status(row)?;
    Ok(AlertView {
        alert,
        status,
        created_at_ms: row.int("CreatedAtMs")?,
        acknowledged_by: row.opt_text("AcknowledgedBy")?,
        acknowledged_at_ms: row.opt_int("AcknowledgedAtMs")?,
        resolved_by: row.opt_text("ResolvedBy")?,
        resolved_at_ms: row.opt_int("ResolvedAtMs")?,
    })
}

impl<E: SqlEngine> AlertStore for E {
    fn alerts(&self, limit: u32) -> BoxFuture<'_, Result<Vec<(Alert, AlertStatus)>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "{VIEW} ORDER BY a.CreatedAtMs DESC, a.{} DESC LIMIT ?",
                self.dialect().seq()
            ))
            .bind(limit)
            .fetch_all(&mut *self.pooled())
            .await?
            .iter()
            .map(|r| rows::alert_with_status(&**r))
            .collect()
        })
    }

    fn list_alerts<'a>(
        &'a self,
        f: &'a AlertFilter,
    ) -> BoxFuture<'a, Result<Vec<AlertView>, StoreError>> {
        Box::pin(async move {
            let mut sql = format!("{VIEW} WHERE 1 = 1");
            let mut args: Vec<Arg<'_>> = Vec::new();
            if let Some(p) = &f.patients {
                if p.is_empty() {
                    return Ok(Vec::new());
                }
                sql.push_str(&format!(" AND a.PatientID IN {}", placeholders(p.len())));
                args.extend(p.iter().map(|&p| Arg::id(p)));
            }
            if let Some(p) = f.patient_id {
                sql.push_str(" AND a.PatientID = ?");
                args.push(Arg::id(p));
            }
            if let Some(r) = &f.rule {
                sql.push_str(" AND a.RuleName = ?");
                args.push(r.into());
            }
            if let Some(s) = &f.severity {
                sql.push_str(" AND a.Severity = ?");
                args.push(s.into());
            }
            if let Some(s) = &f.status {
                sql.push_str(" AND l.Status = ?");
                args.push(s.into());
            }
            if let Some(t) = f.from_ms {
                sql.push_str(" AND a.TimestampMs >= ?");
                args.push(t.into());
            }
            if let Some(t) = f.to_ms {
                sql.push_str(" AND a.TimestampMs < ?");
                args.push(t.into());
            }
            sql.push_str(" ORDER BY a.TimestampMs DESC, a.AlertID DESC LIMIT ? OFFSET ?");
            args.push(f.limit.unwrap_or(100).min(1000).into());
            args.push(f.offset.unwrap_or(0).into());
            q(sql)
                .bind_all(args)
                .transient()
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| view(&**r))
                .collect()
        })
    }

    fn alert<'a>(
        &'a self,
        alert_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AlertView>, StoreError>> {
        Box::pin(async move {
            q(format!("{VIEW} WHERE a.AlertID = ?"))
                .bind(alert_id)
                .fetch_optional(&mut *self.pooled())
                .await?
                .map(|r| view(&*r))
                .transpose()
        })
    }

    fn alert_events<'a>(
        &'a self,
        alert_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AlertEvent>, StoreError>> {
        Box::pin(async move {
            q("SELECT AtMs, Actor, Action, Note FROM AlertEvents WHERE AlertID = ? ORDER BY Seq")
                .bind(alert_id)
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| {
                    Ok(AlertEvent {
                        at_ms: r.int("AtMs")?,
                        actor: r.text("Actor")?,
                        action: r.text("Action")?,
                        note: r.opt_text("Note")?,
                    })
                })
                .collect()
        })
    }

    fn shadow_alerts<'a>(
        &'a self,
        rule: &'a crate::model::RuleRef,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Alert>, StoreError>> {
        Box::pin(async move {
            q("SELECT AlertID, ReadingID, PatientID, DeviceID, Kind, RuleName, RuleVersion, Code, Severity, \
               Message, Value, TimestampMs, 'open' AS Status FROM ShadowAlerts \
               WHERE RuleName = ? AND RuleVersion = ? ORDER BY TimestampMs DESC, AlertID DESC LIMIT ?")
            .bind(&rule.name)
            .bind(&rule.version)
            .bind(limit)
            .fetch_all(&mut *self.pooled())
            .await?
            .iter()
            .map(|r| rows::alert_with_status(&**r).map(|(a, _)| a))
            .collect()
        })
    }

    fn act_on_alert<'a>(
        &'a self,
        alert_id: &'a str,
        action: AlertAction,
        note: Option<&'a str>,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<AlertView, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut tx = self.begin().await?;
            let Some(before) = q(format!("{VIEW} WHERE a.AlertID = ?"))
                .bind(alert_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| view(&*r))
                .transpose()?
            else {
                return Err(StoreError::NotFound(format!("alert {alert_id}")));
            };
            // Conditional updates: two people acting at once cannot both win.
            let changed = match action {
                AlertAction::Acknowledge => {
                    q("UPDATE AlertLifecycle SET Status = 'acknowledged', AcknowledgedBy = ?, AcknowledgedAtMs = ?, UpdatedAtMs = ? \
                       WHERE AlertID = ? AND Status IN ('open', 'suppressed')")
                    .bind(&audit.actor)
                    .bind(now)
                    .bind(now)
                    .bind(alert_id)
                    .execute(&mut *tx)
                    .await?
                }
                AlertAction::Resolve => {
                    q("UPDATE AlertLifecycle SET Status = 'resolved', ResolvedBy = ?, ResolvedAtMs = ?, UpdatedAtMs = ? \
                       WHERE AlertID = ? AND Status <> 'resolved'")
                    .bind(&audit.actor)
                    .bind(now)
                    .bind(now)
                    .bind(alert_id)
                    .execute(&mut *tx)
                    .await?
                }
                AlertAction::Note => 1,
            };
            if changed == 0 {
                let by = match before.status {
                    AlertStatus::Acknowledged => before.acknowledged_by.clone(),
                    AlertStatus::Resolved => before.resolved_by.clone(),
                    _ => None,
                };
                return Err(StoreError::Conflict(format!(
                    "alert {alert_id} is already {}{}",
                    before.status.as_str(),
                    by.map(|b| format!(" (by {b})")).unwrap_or_default()
                )));
            }
            q("INSERT INTO AlertEvents (AlertID, AtMs, Actor, Action, Note) VALUES (?, ?, ?, ?, ?)")
                .bind(alert_id)
                .bind(now)
                .bind(&audit.actor)
                .bind(action.as_str())
                .bind(note)
                .execute(&mut *tx)
                .await?;
            append_audit(&mut *tx, audit).await?;
            let after = q(format!("{VIEW} WHERE a.AlertID = ?"))
                .bind(alert_id)
                .fetch_one(&mut *tx)
                .await?;
            let after = view(&*after)?;
            tx.commit().await?;
            Ok(after)
        })
    }
}
