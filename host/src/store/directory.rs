//! The directory: patients, devices, manufacturers, subscribers and who follows whom (the
//! prototype's tables). Bulk import upserts; single-row calls check references against the
//! store and answer conflicts and missing rows distinctly. Rows that history refers to
//! (patients, devices, subscribers) are deleted softly: their readings and alerts keep
//! pointing at them. Written once for every engine.

use super::accounts::{Audit, append_audit};
use super::rows::Columns;
use super::sql::{Arg, Dialect, Sql, SqlEngine, insert_rows, placeholders, q};
use super::{BoxFuture, RuleScope, StoreError};
use crate::model::dims::{Dimensions, Patient, Subscriber};
use crate::model::{EpochMs, ScopeMembers, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Paging and search of a directory list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    /// Case-insensitive substring of the row's names (or its id, exactly).
    pub search: Option<String>,
    pub offset: Option<u32>,
    pub limit: Option<u32>,
    pub include_deleted: bool,
}

impl ListQuery {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(50).clamp(1, 500)
    }
}

/// One page of a list and how many rows match in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientRecord {
    #[serde(flatten)]
    pub patient: Patient,
    pub created_at_ms: EpochMs,
    pub deleted_at_ms: Option<EpochMs>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriberRecord {
    #[serde(flatten)]
    pub subscriber: Subscriber,
    pub deleted_at_ms: Option<EpochMs>,
}

/// A device as stored (`DeviceStaticInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: u64,
    #[serde(default)]
    pub manufacturer_id: Option<u64>,
    pub patient_id: u64,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub serial_number: Option<String>,
    /// `cgm` or `meter`.
    #[serde(default)]
    pub device_type: Option<String>,
    #[serde(default)]
    pub firmware_version: Option<String>,
    #[serde(default, skip_deserializing)]
    pub deleted_at_ms: Option<EpochMs>,
}

/// Which patients a list may show: every one, or only these (a clinician's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    All,
    Only(Vec<u64>),
}

impl Visible {
    pub fn allows(&self, patient: u64) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(p) => p.contains(&patient),
        }
    }
}

pub trait DirectoryStore: Send + Sync + 'static {
    /// Upserts dimension rows (patients, manufacturers, devices, subscribers, subscriptions)
    /// in one transaction; rows already present are updated, never duplicated.
    fn put_dimensions<'a>(
        &'a self,
        dims: &'a Dimensions,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn patients<'a>(
        &'a self,
        query: &'a ListQuery,
        visible: &'a Visible,
    ) -> BoxFuture<'a, Result<Page<PatientRecord>, StoreError>>;
    fn patient(&self, id: u64) -> BoxFuture<'_, Result<Option<PatientRecord>, StoreError>>;
    /// `create`: a patient with this id must not exist (conflict); otherwise it must
    /// (not found) and not be deleted.
    fn put_patient<'a>(
        &'a self,
        p: &'a Patient,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn delete_patient<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn devices<'a>(
        &'a self,
        query: &'a ListQuery,
        visible: &'a Visible,
    ) -> BoxFuture<'a, Result<Page<DeviceRecord>, StoreError>>;
    fn device(&self, id: u64) -> BoxFuture<'_, Result<Option<DeviceRecord>, StoreError>>;
    /// As `put_patient`; the patient and manufacturer named must exist.
    fn put_device<'a>(
        &'a self,
        d: &'a DeviceRecord,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn delete_device<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn subscribers<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Page<SubscriberRecord>, StoreError>>;
    fn subscriber(&self, id: u64) -> BoxFuture<'_, Result<Option<SubscriberRecord>, StoreError>>;
    fn put_subscriber<'a>(
        &'a self,
        s: &'a Subscriber,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn delete_subscriber<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Who a rule scope covers now: the patients it names or whose profile it names (live
    /// rows), and every device registered to one of them. `None` for every patient.
    fn scope_members<'a>(
        &'a self,
        scope: &'a RuleScope,
    ) -> BoxFuture<'a, Result<Option<ScopeMembers>, StoreError>>;

    /// The patients a subscriber follows (live rows only).
    fn followed_patients(&self, subscriber_id: u64) -> BoxFuture<'_, Result<Vec<u64>, StoreError>>;
    /// The subscribers following a patient.
    fn followers(&self, patient_id: u64) -> BoxFuture<'_, Result<Vec<u64>, StoreError>>;
    /// Both rows must exist and be live; following twice is a conflict.
    fn subscribe<'a>(
        &'a self,
        subscriber_id: u64,
        patient_id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn unsubscribe<'a>(
        &'a self,
        subscriber_id: u64,
        patient_id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

const PATIENT_COLS: &str = "PatientID, FirstName, LastName, DateOfBirth, Sex, Email, Phone, Profile, DiabetesType, CreatedAtMs, DeletedAtMs";
const DEVICE_COLS: &str = "DeviceID, ManufacturerID, PatientID, Model, SerialNumber, DeviceType, FirmwareVersion, DeletedAtMs";
const SUBSCRIBER_COLS: &str = "SubscriberID, Name, Role, TelegramChatID, Email, DeletedAtMs";

fn patient(r: &(impl Columns + ?Sized)) -> Result<PatientRecord, StoreError> {
    Ok(PatientRecord {
        patient: Patient {
            patient_id: r.id("PatientID")?,
            first_name: r.text("FirstName")?,
            last_name: r.text("LastName")?,
            birth_date: r.opt_text("DateOfBirth")?,
            sex: r.opt_text("Sex")?,
            email: r.opt_text("Email")?,
            phone: r.opt_text("Phone")?,
            profile: r.opt_text("Profile")?,
            diabetes_type: r.opt_text("DiabetesType")?,
        },
        created_at_ms: r.int("CreatedAtMs")?,
        deleted_at_ms: r.opt_int("DeletedAtMs")?,
    })
}

fn device(r: &(impl Columns + ?Sized)) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device_id: r.id("DeviceID")?,
        manufacturer_id: r.opt_id("ManufacturerID")?,
        patient_id: r.id("PatientID")?,
        model: r.opt_text("Model")?,
        serial_number: r.opt_text("SerialNumber")?,
        device_type: r.opt_text("DeviceType")?,
        firmware_version: r.opt_text("FirmwareVersion")?,
        deleted_at_ms: r.opt_int("DeletedAtMs")?,
    })
}

fn subscriber(r: &(impl Columns + ?Sized)) -> Result<SubscriberRecord, StoreError> {
    Ok(SubscriberRecord {
        subscriber: Subscriber {
            subscriber_id: r.id("SubscriberID")?,
            name: r.text("Name")?,
            role: r.text("Role")?,
            telegram_chat_id: r.opt_int("TelegramChatID")?,
            email: r.opt_text("Email")?,
        },
        deleted_at_ms: r.opt_int("DeletedAtMs")?,
    })
}

/// A directory table as a list reads it.
struct Listed {
    table: &'static str,
    cols: &'static str,
    key: &'static str,
    /// Columns a search matches (case-insensitive substring).
    search: &'static [&'static str],
}

const PATIENTS: Listed = Listed {
    table: "Patient",
    cols: PATIENT_COLS,
    key: "PatientID",
    search: &["FirstName", "LastName", "Email"],
};
const DEVICES: Listed = Listed {
    table: "DeviceStaticInfo",
    cols: DEVICE_COLS,
    key: "DeviceID",
    search: &["Model", "SerialNumber"],
};
const SUBSCRIBERS: Listed = Listed {
    table: "Subscriber",
    cols: SUBSCRIBER_COLS,
    key: "SubscriberID",
    search: &["Name", "Email"],
};

/// The rows of a table matching a list query (and a visibility restriction on a patient
/// column), counted and paged, ordered by the key.
async fn page<T>(
    c: &mut (dyn Sql + '_),
    listed: &Listed,
    visible: Option<(&str, &Visible)>,
    query: &ListQuery,
    decode: impl Fn(&(dyn Columns + Send + Sync)) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let Listed {
        table,
        cols,
        key,
        search: search_cols,
    } = *listed;
    let mut filter = String::from(" WHERE 1 = 1");
    let mut args: Vec<Arg<'_>> = Vec::new();
    if !query.include_deleted {
        filter.push_str(" AND DeletedAtMs IS NULL");
    }
    if let Some((col, Visible::Only(ids))) = visible {
        if ids.is_empty() {
            filter.push_str(" AND 1 = 0");
        } else {
            filter.push_str(&format!(
                " AND {col} IN {}",
                super::sql::placeholders(ids.len())
            ));
            args.extend(ids.iter().map(|&p| Arg::id(p)));
        }
    }
    if let Some(s) = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let pattern = super::accounts::prefix_pattern(&s.to_lowercase());
        let pattern = format!("%{pattern}");
        let mut any: Vec<String> = search_cols
            .iter()
            .map(|c| format!("LOWER({c}) LIKE ? ESCAPE '!'"))
            .collect();
        args.extend(search_cols.iter().map(|_| Arg::from(pattern.clone())));
        if let Ok(id) = s.parse::<u64>() {
            any.push(format!("{key} = ?"));
            args.push(Arg::id(id));
        }
        filter.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    let total = q(format!("SELECT COUNT(*) AS n FROM {table}{filter}"))
        .bind_all(args.clone())
        .transient()
        .fetch_one(&mut *c)
        .await?
        .id("n")?;
    let (offset, limit) = (query.offset.unwrap_or(0), query.limit());
    let rows = q(format!(
        "SELECT {cols} FROM {table}{filter} ORDER BY {key} LIMIT ? OFFSET ?"
    ))
    .bind_all(args)
    .bind(limit)
    .bind(offset)
    .transient()
    .fetch_all(&mut *c)
    .await?;
    let items = rows
        .iter()
        .map(|r| decode(&**r))
        .collect::<Result<_, _>>()?;
    Ok(Page {
        items,
        total,
        offset,
        limit,
    })
}

/// Whether a row exists and is live: `Some(false)` when soft-deleted.
async fn live(
    c: &mut (dyn Sql + '_),
    table: &str,
    key: &str,
    id: u64,
) -> Result<Option<bool>, StoreError> {
    Ok(
        q(format!("SELECT DeletedAtMs FROM {table} WHERE {key} = ?"))
            .bind(Arg::id(id))
            .fetch_optional(c)
            .await?
            .map(|r| r.opt_int("DeletedAtMs"))
            .transpose()?
            .map(|d| d.is_none()),
    )
}

/// Checks a create or update may proceed: the row must be absent to create, live to update.
async fn check_put(
    c: &mut (dyn Sql + '_),
    what: &str,
    table: &str,
    key: &str,
    id: u64,
    create: bool,
) -> Result<(), StoreError> {
    match (live(c, table, key, id).await?, create) {
        (Some(true), true) => Err(StoreError::Conflict(format!("{what} {id} already exists"))),
        (Some(false), true) => Err(StoreError::Conflict(format!(
            "{what} {id} existed and was deleted; ids are not reused"
        ))),
        (None, false) | (Some(false), false) => Err(StoreError::NotFound(format!("{what} {id}"))),
        _ => Ok(()),
    }
}

async fn require_live(
    c: &mut (dyn Sql + '_),
    what: &str,
    table: &str,
    key: &str,
    id: u64,
) -> Result<(), StoreError> {
    match live(c, table, key, id).await? {
        Some(true) => Ok(()),
        _ => Err(StoreError::NotFound(format!("{what} {id}"))),
    }
}

async fn soft_delete(
    c: &mut (dyn Sql + '_),
    what: &str,
    table: &str,
    key: &str,
    id: u64,
) -> Result<(), StoreError> {
    let n = q(format!(
        "UPDATE {table} SET DeletedAtMs = ? WHERE {key} = ? AND DeletedAtMs IS NULL"
    ))
    .bind(now_ms())
    .bind(Arg::id(id))
    .execute(c)
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("{what} {id}")));
    }
    Ok(())
}

fn patient_args(p: &Patient, now: EpochMs) -> Vec<Arg<'_>> {
    vec![
        Arg::id(p.patient_id),
        (&p.first_name).into(),
        (&p.last_name).into(),
        (&p.birth_date).into(),
        (&p.sex).into(),
        (&p.email).into(),
        (&p.phone).into(),
        (&p.profile).into(),
        (&p.diabetes_type).into(),
        now.into(),
    ]
}

const PATIENT_INSERT: &str = "INSERT INTO Patient (PatientID, FirstName, LastName, DateOfBirth, Sex, Email, Phone, Profile, DiabetesType, CreatedAtMs)";
const PATIENT_UPDATED: [&str; 8] = [
    "FirstName",
    "LastName",
    "DateOfBirth",
    "Sex",
    "Email",
    "Phone",
    "Profile",
    "DiabetesType",
];
const DEVICE_INSERT: &str = "INSERT INTO DeviceStaticInfo (DeviceID, ManufacturerID, PatientID, Model, SerialNumber, DeviceType, FirmwareVersion)";
const DEVICE_UPDATED: [&str; 6] = [
    "ManufacturerID",
    "PatientID",
    "Model",
    "SerialNumber",
    "DeviceType",
    "FirmwareVersion",
];
const SUBSCRIBER_INSERT: &str =
    "INSERT INTO Subscriber (SubscriberID, Name, Role, TelegramChatID, Email)";
const SUBSCRIBER_UPDATED: [&str; 4] = ["Name", "Role", "TelegramChatID", "Email"];

fn device_args(d: &DeviceRecord) -> Vec<Arg<'_>> {
    vec![
        Arg::id(d.device_id),
        Arg::opt_id(d.manufacturer_id),
        Arg::id(d.patient_id),
        (&d.model).into(),
        (&d.serial_number).into(),
        (&d.device_type).into(),
        (&d.firmware_version).into(),
    ]
}

fn subscriber_args(s: &Subscriber) -> Vec<Arg<'_>> {
    vec![
        Arg::id(s.subscriber_id),
        (&s.name).into(),
        (&s.role).into(),
        s.telegram_chat_id.into(),
        (&s.email).into(),
    ]
}

fn upsert(d: Dialect, key: &str, cols: &[&str]) -> String {
    d.upsert(&[key], cols)
}

impl<E: SqlEngine> DirectoryStore for E {
    fn put_dimensions<'a>(
        &'a self,
        d: &'a Dimensions,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let dialect = self.dialect();
            let mut tx = self.begin().await?;
            let c: &mut dyn Sql = &mut *tx;
            insert_rows(
                c,
                PATIENT_INSERT,
                10,
                d.patients.iter().map(|p| patient_args(p, now)).collect(),
                &upsert(dialect, "PatientID", &PATIENT_UPDATED),
            )
            .await?;
            insert_rows(
                c,
                "INSERT INTO Manufacturer (ManufacturerID, Name, Country)",
                3,
                d.manufacturers
                    .iter()
                    .map(|m| {
                        vec![
                            Arg::id(m.manufacturer_id),
                            (&m.name).into(),
                            (&m.country).into(),
                        ]
                    })
                    .collect(),
                &upsert(dialect, "ManufacturerID", &["Name", "Country"]),
            )
            .await?;
            let devices: Vec<DeviceRecord> = d
                .devices
                .iter()
                .map(|dev| {
                    let model = d.device_models.iter().find(|m| m.model_id == dev.model_id);
                    DeviceRecord {
                        device_id: dev.device_id,
                        manufacturer_id: model.map(|m| m.manufacturer_id),
                        patient_id: dev.patient_id,
                        model: model.map(|m| m.name.clone()),
                        serial_number: Some(dev.serial_number.clone()),
                        device_type: model.map(|m| m.kind.clone()),
                        firmware_version: dev.firmware_version.clone(),
                        deleted_at_ms: None,
                    }
                })
                .collect();
            insert_rows(
                c,
                DEVICE_INSERT,
                7,
                devices.iter().map(device_args).collect(),
                &upsert(dialect, "DeviceID", &DEVICE_UPDATED),
            )
            .await?;
            insert_rows(
                c,
                SUBSCRIBER_INSERT,
                5,
                d.subscribers.iter().map(subscriber_args).collect(),
                &upsert(dialect, "SubscriberID", &SUBSCRIBER_UPDATED),
            )
            .await?;
            insert_rows(
                c,
                "INSERT INTO SubscribedPatients (SubscriberID, PatientID)",
                2,
                d.subscriptions
                    .iter()
                    .map(|s| vec![Arg::id(s.subscriber_id), Arg::id(s.patient_id)])
                    .collect(),
                &dialect.ignore_duplicate("SubscriberID"),
            )
            .await?;
            append_audit(c, audit).await?;
            tx.commit().await
        })
    }

    fn scope_members<'a>(
        &'a self,
        scope: &'a RuleScope,
    ) -> BoxFuture<'a, Result<Option<ScopeMembers>, StoreError>> {
        Box::pin(async move {
            let patients: HashSet<u64> = match scope {
                RuleScope::All {} => return Ok(None),
                RuleScope::Patients { patients } => patients.iter().copied().collect(),
                RuleScope::Profiles { profiles } if profiles.is_empty() => HashSet::new(),
                RuleScope::Profiles { profiles } => {
                    let mut stmt = q(format!(
                        "SELECT PatientID FROM Patient WHERE DeletedAtMs IS NULL AND Profile IN {}",
                        placeholders(profiles.len())
                    ));
                    for p in profiles {
                        stmt = stmt.bind(p);
                    }
                    stmt.fetch_all(&mut *self.pooled())
                        .await?
                        .iter()
                        .map(|r| r.id("PatientID"))
                        .collect::<Result<_, _>>()?
                }
            };
            // Every registered device, deleted or not: a device still sending telemetry
            // stays its patient's. Filtered here rather than bound, so no list is too long.
            let mut devices = HashSet::new();
            for r in
                q("SELECT DeviceID, PatientID FROM DeviceStaticInfo WHERE PatientID IS NOT NULL")
                    .fetch_all(&mut *self.pooled())
                    .await?
            {
                if patients.contains(&r.id("PatientID")?) {
                    devices.insert(r.id("DeviceID")?);
                }
            }
            Ok(Some(ScopeMembers { patients, devices }))
        })
    }

    fn patients<'a>(
        &'a self,
        query: &'a ListQuery,
        visible: &'a Visible,
    ) -> BoxFuture<'a, Result<Page<PatientRecord>, StoreError>> {
        Box::pin(async move {
            page(
                &mut *self.pooled(),
                &PATIENTS,
                Some(("PatientID", visible)),
                query,
                |r| patient(r),
            )
            .await
        })
    }

    fn patient(&self, id: u64) -> BoxFuture<'_, Result<Option<PatientRecord>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT {PATIENT_COLS} FROM Patient WHERE PatientID = ?"
            ))
            .bind(Arg::id(id))
            .fetch_optional(&mut *self.pooled())
            .await?
            .map(|r| patient(&*r))
            .transpose()
        })
    }

    fn put_patient<'a>(
        &'a self,
        p: &'a Patient,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            check_put(
                &mut *tx,
                "patient",
                "Patient",
                "PatientID",
                p.patient_id,
                create,
            )
            .await?;
            q(format!(
                "{PATIENT_INSERT} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
                upsert(self.dialect(), "PatientID", &PATIENT_UPDATED)
            ))
            .bind_all(patient_args(p, now_ms()))
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn delete_patient<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            soft_delete(&mut *tx, "patient", "Patient", "PatientID", id).await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn devices<'a>(
        &'a self,
        query: &'a ListQuery,
        visible: &'a Visible,
    ) -> BoxFuture<'a, Result<Page<DeviceRecord>, StoreError>> {
        Box::pin(async move {
            page(
                &mut *self.pooled(),
                &DEVICES,
                Some(("PatientID", visible)),
                query,
                |r| device(r),
            )
            .await
        })
    }

    fn device(&self, id: u64) -> BoxFuture<'_, Result<Option<DeviceRecord>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT {DEVICE_COLS} FROM DeviceStaticInfo WHERE DeviceID = ?"
            ))
            .bind(Arg::id(id))
            .fetch_optional(&mut *self.pooled())
            .await?
            .map(|r| device(&*r))
            .transpose()
        })
    }

    fn put_device<'a>(
        &'a self,
        d: &'a DeviceRecord,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            check_put(
                &mut *tx,
                "device",
                "DeviceStaticInfo",
                "DeviceID",
                d.device_id,
                create,
            )
            .await?;
            require_live(&mut *tx, "patient", "Patient", "PatientID", d.patient_id).await?;
            if let Some(m) = d.manufacturer_id {
                let found = q("SELECT ManufacturerID FROM Manufacturer WHERE ManufacturerID = ?")
                    .bind(Arg::id(m))
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_none() {
                    return Err(StoreError::NotFound(format!("manufacturer {m}")));
                }
            }
            q(format!(
                "{DEVICE_INSERT} VALUES (?, ?, ?, ?, ?, ?, ?){}",
                upsert(self.dialect(), "DeviceID", &DEVICE_UPDATED)
            ))
            .bind_all(device_args(d))
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn delete_device<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            soft_delete(&mut *tx, "device", "DeviceStaticInfo", "DeviceID", id).await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn subscribers<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Page<SubscriberRecord>, StoreError>> {
        Box::pin(async move {
            page(&mut *self.pooled(), &SUBSCRIBERS, None, query, |r| {
                subscriber(r)
            })
            .await
        })
    }

    fn subscriber(&self, id: u64) -> BoxFuture<'_, Result<Option<SubscriberRecord>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT {SUBSCRIBER_COLS} FROM Subscriber WHERE SubscriberID = ?"
            ))
            .bind(Arg::id(id))
            .fetch_optional(&mut *self.pooled())
            .await?
            .map(|r| subscriber(&*r))
            .transpose()
        })
    }

    fn put_subscriber<'a>(
        &'a self,
        s: &'a Subscriber,
        create: bool,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            check_put(
                &mut *tx,
                "subscriber",
                "Subscriber",
                "SubscriberID",
                s.subscriber_id,
                create,
            )
            .await?;
            q(format!(
                "{SUBSCRIBER_INSERT} VALUES (?, ?, ?, ?, ?){}",
                upsert(self.dialect(), "SubscriberID", &SUBSCRIBER_UPDATED)
            ))
            .bind_all(subscriber_args(s))
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn delete_subscriber<'a>(
        &'a self,
        id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            soft_delete(&mut *tx, "subscriber", "Subscriber", "SubscriberID", id).await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn followed_patients(&self, subscriber_id: u64) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        Box::pin(async move {
            q("SELECT sp.PatientID FROM SubscribedPatients sp JOIN Patient p ON p.PatientID = sp.PatientID \
               JOIN Subscriber s ON s.SubscriberID = sp.SubscriberID \
               WHERE sp.SubscriberID = ? AND p.DeletedAtMs IS NULL AND s.DeletedAtMs IS NULL ORDER BY sp.PatientID")
                .bind(Arg::id(subscriber_id))
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| r.id("PatientID"))
                .collect()
        })
    }

    fn followers(&self, patient_id: u64) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        Box::pin(async move {
            q("SELECT sp.SubscriberID FROM SubscribedPatients sp JOIN Subscriber s ON s.SubscriberID = sp.SubscriberID \
               WHERE sp.PatientID = ? AND s.DeletedAtMs IS NULL ORDER BY sp.SubscriberID")
                .bind(Arg::id(patient_id))
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| r.id("SubscriberID"))
                .collect()
        })
    }

    fn subscribe<'a>(
        &'a self,
        subscriber_id: u64,
        patient_id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            require_live(
                &mut *tx,
                "subscriber",
                "Subscriber",
                "SubscriberID",
                subscriber_id,
            )
            .await?;
            require_live(&mut *tx, "patient", "Patient", "PatientID", patient_id).await?;
            let present = q(
                "SELECT PatientID FROM SubscribedPatients WHERE SubscriberID = ? AND PatientID = ?",
            )
            .bind(Arg::id(subscriber_id))
            .bind(Arg::id(patient_id))
            .fetch_optional(&mut *tx)
            .await?;
            if present.is_some() {
                return Err(StoreError::Conflict(format!(
                    "subscriber {subscriber_id} already follows patient {patient_id}"
                )));
            }
            q(format!(
                "INSERT INTO SubscribedPatients (SubscriberID, PatientID) VALUES (?, ?){}",
                self.dialect().ignore_duplicate("SubscriberID")
            ))
            .bind(Arg::id(subscriber_id))
            .bind(Arg::id(patient_id))
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn unsubscribe<'a>(
        &'a self,
        subscriber_id: u64,
        patient_id: u64,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let n = q("DELETE FROM SubscribedPatients WHERE SubscriberID = ? AND PatientID = ?")
                .bind(Arg::id(subscriber_id))
                .bind(Arg::id(patient_id))
                .execute(&mut *tx)
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "subscription of subscriber {subscriber_id} to patient {patient_id}"
                )));
            }
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }
}
