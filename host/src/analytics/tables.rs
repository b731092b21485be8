//! The column layout GlucoGuard's facts have outside the OLTP store: the DuckDB analytics
//! tables and the archive's Parquet files share it, so a restore is a plain
//! `INSERT … SELECT * FROM read_parquet(…)`.
//!
//! Times are epoch milliseconds (UTC) like everywhere else in the host; ids are the OLTP ids,
//! which is what makes every copy deduplicable.

use crate::model::batch::{AlertStatus, WriteBatch};
use crate::model::{Alert, Body, EpochMs, Reading, ReadingKind};

/// One fact table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    GlucoseReadings,
    DeviceReadings,
    Alerts,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::GlucoseReadings, Table::DeviceReadings, Table::Alerts];

    /// Table name in DuckDB and folder name in the archive.
    pub fn name(self) -> &'static str {
        match self {
            Table::GlucoseReadings => "glucose_readings",
            Table::DeviceReadings => "device_readings",
            Table::Alerts => "alerts",
        }
    }

    pub fn of_reading(kind: ReadingKind) -> Table {
        match kind {
            ReadingKind::Glucose => Table::GlucoseReadings,
            ReadingKind::Device => Table::DeviceReadings,
        }
    }

    /// The column list, in order, with DuckDB types.
    pub fn columns(self) -> &'static str {
        match self {
            Table::GlucoseReadings => {
                "id VARCHAR NOT NULL, patient_id UBIGINT NOT NULL, device_id UBIGINT NOT NULL, \
                 at_ms BIGINT NOT NULL, mg_dl DOUBLE NOT NULL, location VARCHAR, \
                 received_at_ms BIGINT NOT NULL"
            }
            Table::DeviceReadings => {
                "id VARCHAR NOT NULL, device_id UBIGINT NOT NULL, at_ms BIGINT NOT NULL, \
                 battery_pct DOUBLE, firmware_version VARCHAR, connectivity VARCHAR NOT NULL, \
                 error_codes VARCHAR NOT NULL, received_at_ms BIGINT NOT NULL"
            }
            Table::Alerts => {
                "id VARCHAR NOT NULL, rule_name VARCHAR NOT NULL, rule_version VARCHAR NOT NULL, \
                 reading_id VARCHAR NOT NULL, patient_id UBIGINT, device_id UBIGINT NOT NULL, \
                 kind VARCHAR NOT NULL, at_ms BIGINT NOT NULL, code VARCHAR NOT NULL, \
                 severity VARCHAR NOT NULL, message VARCHAR NOT NULL, value DOUBLE, \
                 status VARCHAR NOT NULL, created_at_ms BIGINT NOT NULL"
            }
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for this table under `name` (e.g. a staging copy).
    pub fn create_sql(self, name: &str, primary_key: bool, temporary: bool) -> String {
        format!(
            "CREATE {}TABLE IF NOT EXISTS {name} ({}{})",
            if temporary { "TEMPORARY " } else { "" },
            self.columns(),
            if primary_key {
                ", PRIMARY KEY (id)"
            } else {
                ""
            },
        )
    }
}

/// Row counts of one append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub glucose_readings: u64,
    pub device_readings: u64,
    pub alerts: u64,
}

/// Appends a batch's readings, telemetry and alerts to tables with the [`Table`] layouts,
/// named `<table><suffix>` in `catalog` (`"main"` or `"temp"`), through DuckDB appenders.
/// The appenders are flushed before returning.
pub fn append_batch(
    conn: &duckdb::Connection,
    batch: &WriteBatch,
    catalog: &str,
    suffix: &str,
) -> duckdb::Result<Appended> {
    append_batches(conn, std::slice::from_ref(batch), catalog, suffix)
}

/// Like [`append_batch`] for several batches at once, in order, through one appender per
/// table: many small batches cost one flush, not one each (an appender's flush is a
/// transaction of its own outside an explicit one).
pub fn append_batches<B: std::borrow::Borrow<WriteBatch>>(
    conn: &duckdb::Connection,
    batches: &[B],
    catalog: &str,
    suffix: &str,
) -> duckdb::Result<Appended> {
    let mut readings: Vec<(&Reading, EpochMs)> = Vec::new();
    let mut alerts: Vec<(&Alert, AlertStatus, EpochMs)> = Vec::new();
    for batch in batches {
        let batch = batch.borrow();
        let received = batch.received_at_ms;
        readings.extend(batch.readings.iter().map(|r| (r, received)));
        alerts.extend(batch.alerts.iter().map(|(a, s)| (a, *s, received)));
    }
    append_rows(conn, &readings, &alerts, catalog, suffix)
}

/// Like [`append_batch`], for rows that each carry their own receive time (rows read back
/// from the OLTP store span many batches): readings with their `received_at_ms`, alerts with
/// their status and `created_at_ms`.
pub fn append_rows(
    conn: &duckdb::Connection,
    readings: &[(&Reading, EpochMs)],
    alerts: &[(&Alert, AlertStatus, EpochMs)],
    catalog: &str,
    suffix: &str,
) -> duckdb::Result<Appended> {
    let mut n = Appended::default();
    let name = |t: Table| format!("{}{suffix}", t.name());
    if readings
        .iter()
        .any(|(r, _)| r.kind() == ReadingKind::Glucose)
    {
        let mut app =
            conn.appender_to_catalog_and_db(&name(Table::GlucoseReadings), catalog, "main")?;
        for (r, received) in readings {
            if let Body::Glucose(g) = &r.body {
                app.append_row(duckdb::params![
                    r.id,
                    g.patient_id,
                    g.device_id,
                    r.at_ms,
                    g.mg_dl,
                    g.location,
                    received
                ])?;
                n.glucose_readings += 1;
            }
        }
        app.flush()?;
    }
    if readings
        .iter()
        .any(|(r, _)| r.kind() == ReadingKind::Device)
    {
        let mut app =
            conn.appender_to_catalog_and_db(&name(Table::DeviceReadings), catalog, "main")?;
        for (r, received) in readings {
            if let Body::Device(d) = &r.body {
                let codes = serde_json::to_string(&d.error_codes).expect("strings serialize");
                app.append_row(duckdb::params![
                    r.id,
                    d.device_id,
                    r.at_ms,
                    d.battery_pct,
                    d.firmware_version,
                    d.connectivity.as_str(),
                    codes,
                    received
                ])?;
                n.device_readings += 1;
            }
        }
        app.flush()?;
    }
    if !alerts.is_empty() {
        let mut app = conn.appender_to_catalog_and_db(&name(Table::Alerts), catalog, "main")?;
        for (a, status, created) in alerts {
            app.append_row(duckdb::params![
                a.id,
                a.rule.name,
                a.rule.version,
                a.reading_id,
                a.patient_id,
                a.device_id,
                a.kind.as_str(),
                a.at_ms,
                a.code,
                a.severity.as_str(),
                a.message,
                a.value,
                status.as_str(),
                created
            ])?;
            n.alerts += 1;
        }
        app.flush()?;
    }
    Ok(n)
}
