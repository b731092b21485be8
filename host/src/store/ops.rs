//! Operations: row counts, dead letters, rule faults and a liveness ping. Written once for
//! every engine.

use super::accounts::{Audit, append_audit};
use super::rows;
use super::sql::{SqlEngine, q};
use super::{BoxFuture, Counts, StoreError};
use crate::model::{DeadLetter, RuleFault};

pub trait OpsStore: Send + Sync + 'static {
    /// Engine name for logs and errors, e.g. `sqlite`.
    fn kind(&self) -> &'static str;

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>>;

    /// Newest first.
    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>>;

    /// The dead letter with this fingerprint.
    fn dead_letter<'a>(
        &'a self,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeadLetter>, StoreError>>;

    /// Removes a dead letter once it was replayed into the pipeline and accepted.
    fn delete_dead_letter<'a>(
        &'a self,
        fingerprint: &'a str,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Newest first.
    fn rule_faults(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RuleFault>, StoreError>>;

    /// A round trip to the database (`SELECT 1`), for `/health` and `/ready`.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl<E: SqlEngine> OpsStore for E {
    fn kind(&self) -> &'static str {
        self.engine_name()
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            let row = q(
                "SELECT (SELECT COUNT(*) FROM Patient) AS p, (SELECT COUNT(*) FROM DeviceStaticInfo) AS dev, \
                 (SELECT COUNT(*) FROM Subscriber) AS s, (SELECT COUNT(*) FROM SubscribedPatients) AS sp, \
                 (SELECT COUNT(*) FROM GlucoseReadings) AS g, (SELECT COUNT(*) FROM DeviceOperationalData) AS d, \
                 (SELECT COUNT(*) FROM Alerts) AS a, (SELECT COUNT(*) FROM DeadLetters) AS dl, (SELECT COUNT(*) FROM RuleFaults) AS f",
            )
            .fetch_one(&mut *self.pooled())
            .await?;
            Ok(Counts {
                patients: row.id("p")?,
                devices: row.id("dev")?,
                subscribers: row.id("s")?,
                subscriptions: row.id("sp")?,
                glucose_readings: row.id("g")?,
                device_readings: row.id("d")?,
                alerts: row.id("a")?,
                dead_letters: row.id("dl")?,
                rule_faults: row.id("f")?,
            })
        })
    }

    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT Origin, Reason, Payload, ReceivedAtMs FROM DeadLetters ORDER BY ReceivedAtMs DESC, {} DESC LIMIT ?",
                self.dialect().seq()
            ))
            .bind(limit)
            .fetch_all(&mut *self.pooled())
            .await?
            .iter()
            .map(|r| rows::dead_letter(&**r))
            .collect()
        })
    }

    fn dead_letter<'a>(
        &'a self,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeadLetter>, StoreError>> {
        Box::pin(async move {
            q("SELECT Origin, Reason, Payload, ReceivedAtMs FROM DeadLetters WHERE Fingerprint = ?")
                .bind(fingerprint)
                .fetch_optional(&mut *self.pooled())
                .await?
                .map(|r| rows::dead_letter(&*r))
                .transpose()
        })
    }

    fn delete_dead_letter<'a>(
        &'a self,
        fingerprint: &'a str,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let n = q("DELETE FROM DeadLetters WHERE Fingerprint = ?")
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("dead letter {fingerprint}")));
            }
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn rule_faults(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RuleFault>, StoreError>> {
        Box::pin(async move {
            q("SELECT RuleName, Version, Kind, Detail, AtMs FROM RuleFaults ORDER BY FaultID DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| rows::rule_fault(&**r))
                .collect()
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            q("SELECT 1").execute(&mut *self.pooled()).await?;
            Ok(())
        })
    }
}
