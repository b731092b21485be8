//! Rules: immutable versions (the Wasm by SHA-256, who uploaded it, quarantine) and each
//! rule's state (active version, enabled, parameters). Written once for every engine.

use super::accounts::{Audit, append_audit};
use super::rows::{self, Columns};
use super::sql::{Sql, SqlEngine, q};
use super::{BoxFuture, RuleState, RuleVersionRecord, StoreError};
use crate::model::{RuleInfo, RuleRef, now_ms};

pub trait RuleStore: Send + Sync + 'static {
    /// Stores a rule version. The same name and version with other bytes is a conflict:
    /// released versions are immutable. Storing the same bytes again changes nothing (and
    /// audits nothing).
    fn put_rule_version<'a>(
        &'a self,
        info: &'a RuleInfo,
        sha256: &'a str,
        wasm: &'a [u8],
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every version, per rule in upload order.
    fn rule_versions(&self) -> BoxFuture<'_, Result<Vec<RuleVersionRecord>, StoreError>>;

    fn rule_wasm<'a>(&'a self, rule: &'a RuleRef) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;

    fn put_rule_state<'a>(
        &'a self,
        state: &'a RuleState,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn rule_states(&self) -> BoxFuture<'_, Result<Vec<RuleState>, StoreError>>;

    /// Clears a version's quarantine so it can be enabled again.
    fn release_quarantine<'a>(
        &'a self,
        rule: &'a RuleRef,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

fn version(row: &(impl Columns + ?Sized)) -> Result<RuleVersionRecord, StoreError> {
    Ok(RuleVersionRecord {
        info: rows::json(row, "Info")?,
        sha256: row.text("Sha256")?,
        quarantine_reason: row.opt_text("QuarantineReason")?,
        uploaded_at_ms: row.int("UploadedAtMs")?,
        uploaded_by: row.opt_text("UploadedBy")?,
    })
}

async fn stored_sha(c: &mut (dyn Sql + '_), info: &RuleInfo) -> Result<Option<String>, StoreError> {
    q("SELECT Sha256 FROM RuleVersions WHERE RuleName = ? AND Version = ?")
        .bind(&info.name)
        .bind(&info.version)
        .fetch_optional(c)
        .await?
        .map(|r| r.text("Sha256"))
        .transpose()
}

impl<E: SqlEngine> RuleStore for E {
    fn put_rule_version<'a>(
        &'a self,
        info: &'a RuleInfo,
        sha256: &'a str,
        wasm: &'a [u8],
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let existing = stored_sha(&mut *tx, info).await?;
            match existing {
                Some(s) if s == sha256 => return Ok(()),
                Some(_) => {
                    return Err(StoreError::Conflict(format!(
                        "{}@{} is already stored with different bytes; released versions are immutable, bump the version",
                        info.name, info.version
                    )));
                }
                None => {}
            }
            let info_json =
                serde_json::to_string(info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Two hosts may upload at once: the loser's insert is skipped and the check below
            // compares against whichever bytes won.
            q(format!(
                "INSERT INTO RuleVersions (RuleName, Version, Sha256, Wasm, Info, UploadedAtMs, UploadedBy) \
                 VALUES (?, ?, ?, ?, ?, ?, ?){}",
                self.dialect().ignore_duplicate("RuleName")
            ))
            .bind(&info.name)
            .bind(&info.version)
            .bind(sha256)
            .bind(wasm)
            .bind(info_json)
            .bind(now_ms())
            .bind(&audit.actor)
            .execute(&mut *tx)
            .await?;
            if stored_sha(&mut *tx, info).await?.as_deref() != Some(sha256) {
                return Err(StoreError::Conflict(format!(
                    "{}@{} was stored with different bytes at the same time; bump the version",
                    info.name, info.version
                )));
            }
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn rule_versions(&self) -> BoxFuture<'_, Result<Vec<RuleVersionRecord>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT Info, Sha256, QuarantineReason, UploadedAtMs, UploadedBy FROM RuleVersions \
                 ORDER BY RuleName, UploadedAtMs, {}",
                self.dialect().seq()
            ))
            .fetch_all(&mut *self.pooled())
            .await?
            .iter()
            .map(|r| version(&**r))
            .collect()
        })
    }

    fn rule_wasm<'a>(&'a self, rule: &'a RuleRef) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            q("SELECT Wasm FROM RuleVersions WHERE RuleName = ? AND Version = ?")
                .bind(&rule.name)
                .bind(&rule.version)
                .fetch_optional(&mut *self.pooled())
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("rule version {rule}")))?
                .bytes("Wasm")
        })
    }

    fn put_rule_state<'a>(
        &'a self,
        s: &'a RuleState,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let params =
                serde_json::to_string(&s.params).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut tx = self.begin().await?;
            let shadow_params = s
                .shadow
                .as_ref()
                .map(|sh| serde_json::to_string(&sh.params))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Every patient is stored as NULL, as rows from before scopes existed read.
            let scope = (!s.scope.is_all())
                .then(|| serde_json::to_string(&s.scope))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            q(format!(
                "INSERT INTO Rules (RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs, ShadowVersion, ShadowParams, Scope) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?){}",
                self.dialect().upsert(
                    &["RuleName"],
                    &["ActiveVersion", "Enabled", "Params", "UpdatedAtMs", "ShadowVersion", "ShadowParams", "Scope"]
                )
            ))
            .bind(&s.name)
            .bind(&s.active_version)
            .bind(s.enabled)
            .bind(params)
            .bind(s.updated_at_ms)
            .bind(s.shadow.as_ref().map(|sh| sh.version.as_str()))
            .bind(shadow_params)
            .bind(scope)
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn rule_states(&self) -> BoxFuture<'_, Result<Vec<RuleState>, StoreError>> {
        Box::pin(async move {
            q("SELECT RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs, ShadowVersion, ShadowParams, Scope FROM Rules ORDER BY RuleName")
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|row| {
                    Ok(RuleState {
                        name: row.text("RuleName")?,
                        active_version: row.text("ActiveVersion")?,
                        enabled: row.boolean("Enabled")?,
                        params: rows::json(&**row, "Params")?,
                        updated_at_ms: row.int("UpdatedAtMs")?,
                        shadow: match row.opt_text("ShadowVersion")? {
                            Some(version) => Some(super::ShadowState {
                                version,
                                params: rows::json(&**row, "ShadowParams")?,
                            }),
                            None => None,
                        },
                        scope: match row.opt_text("Scope")? {
                            Some(_) => rows::json(&**row, "Scope")?,
                            None => super::RuleScope::All {},
                        },
                    })
                })
                .collect()
        })
    }

    fn release_quarantine<'a>(
        &'a self,
        rule: &'a RuleRef,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            q("UPDATE RuleVersions SET Status = 'ok', QuarantineReason = NULL WHERE RuleName = ? AND Version = ?")
                .bind(&rule.name)
                .bind(&rule.version)
                .execute(&mut *tx)
                .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }
}
