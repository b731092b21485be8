//! Checkpoints and partition ownership in Azure Blob Storage, for the SDK's load-balancing
//! `EventProcessor`: our implementation of its `CheckpointStore` on the project's Blob
//! client (`object_store`), laid out as the official blob checkpoint stores lay them out so
//! their tools read ours and ours theirs.
//!
//! - One empty blob per partition and kind, named
//!   `{namespace}/{hub}/{consumer group}/ownership/{partition}` and
//!   `…/checkpoint/{partition}`, the three names lower-cased as the .NET, Java and Python
//!   stores write them.
//! - Metadata `ownerid` on an ownership blob (empty: relinquished); `offset` and
//!   `sequencenumber` on a checkpoint blob.
//! - An ownership's ETag and last-modified time are the blob's. A claim is a conditional
//!   write: `If-Match` the ETag the claimant listed, or `If-None-Match: *` for a partition
//!   nobody claimed yet, so of two instances claiming one partition exactly one wins.
//! - A checkpoint never moves back: it is written only over a lower sequence number (read,
//!   then `If-Match`), so an instance that lost a partition cannot rewind its new owner.
//!   Every position written is a prefix that was durable, whoever wrote it.

use azure_core::http::Etag;
use azure_core::time::OffsetDateTime;
use azure_messaging_eventhubs::CheckpointStore;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership};
use futures_util::TryStreamExt;
use object_store::path::Path as BlobPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

const OWNER_ID: &str = "ownerid";
const OFFSET: &str = "offset";
const SEQUENCE_NUMBER: &str = "sequencenumber";

/// The blob checkpoint store. Cloneable; clones share the record of owner ids claimed
/// through it, which [`BlobCheckpointStore::relinquish`] gives up.
#[derive(Debug, Clone)]
pub struct BlobCheckpointStore {
    blobs: Arc<dyn ObjectStore>,
    claimed_as: Arc<Mutex<BTreeSet<String>>>,
}

fn prefix(namespace: &str, hub: &str, group: &str, kind: &str) -> String {
    format!(
        "{}/{}/{}/{kind}/",
        namespace.to_lowercase(),
        hub.to_lowercase(),
        group.to_lowercase()
    )
}

/// The blob name of one partition's record (`kind`: `ownership` or `checkpoint`).
pub fn blob_name(namespace: &str, hub: &str, group: &str, kind: &str, partition: &str) -> String {
    format!("{}{partition}", prefix(namespace, hub, group, kind))
}

fn storage_error(what: &str, e: object_store::Error) -> azure_core::Error {
    azure_core::Error::with_message(
        azure_core::error::ErrorKind::Io,
        format!(
            "checkpoint store: {what}: {}",
            crate::archive::redact(&e.to_string())
        ),
    )
}

fn path(name: &str) -> azure_core::Result<BlobPath> {
    BlobPath::parse(name).map_err(|e| {
        azure_core::Error::with_message(
            azure_core::error::ErrorKind::DataConversion,
            format!("checkpoint store: blob name {name:?}: {e}"),
        )
    })
}

fn to_offset_date_time(t: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.timestamp_nanos_opt()? as i128).ok()
}

/// One blob as read: its metadata, ETag and last-modified time.
struct Record {
    partition: String,
    metadata: Attributes,
    etag: Option<String>,
    last_modified: Option<OffsetDateTime>,
}

impl Record {
    fn meta(&self, key: &'static str) -> Option<&str> {
        self.metadata
            .get(&Attribute::Metadata(key.into()))
            .map(|v| v.as_ref())
    }
}

fn metadata(pairs: &[(&'static str, String)]) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in pairs {
        a.insert(
            Attribute::Metadata((*k).into()),
            AttributeValue::from(v.clone()),
        );
    }
    a
}

impl BlobCheckpointStore {
    /// On a container (the store's root is the container's).
    pub fn new(blobs: Arc<dyn ObjectStore>) -> Self {
        BlobCheckpointStore {
            blobs,
            claimed_as: Arc::default(),
        }
    }

    async fn read(&self, name: &str) -> azure_core::Result<Option<Record>> {
        let partition = name.rsplit('/').next().unwrap_or_default().to_owned();
        match self.blobs.get(&path(name)?).await {
            Ok(got) => Ok(Some(Record {
                partition,
                etag: got.meta.e_tag.clone(),
                last_modified: to_offset_date_time(got.meta.last_modified),
                metadata: got.attributes,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(&format!("read {name}"), e)),
        }
    }

    /// Every record under a prefix. A blob removed between the listing and its read is
    /// skipped.
    async fn read_all(&self, prefix: &str) -> azure_core::Result<Vec<Record>> {
        let listed: Vec<_> = self
            .blobs
            .list(Some(&path(prefix.trim_end_matches('/'))?))
            .try_collect()
            .await
            .map_err(|e| storage_error(&format!("list {prefix}"), e))?;
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            if let Some(r) = self.read(meta.location.as_ref()).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A conditional write: `Ok(Some(etag))` when it won, `Ok(None)` when someone else wrote
    /// first.
    async fn write(
        &self,
        name: &str,
        expect: Option<&str>,
        meta: Attributes,
    ) -> azure_core::Result<Option<Option<String>>> {
        let mode = match expect {
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.to_owned()),
                version: None,
            }),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            attributes: meta,
            ..Default::default()
        };
        match self
            .blobs
            .put_opts(&path(name)?, PutPayload::new(), opts)
            .await
        {
            Ok(r) => Ok(Some(r.e_tag)),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(None),
            Err(e) => Err(storage_error(&format!("write {name}"), e)),
        }
    }

    fn ownership_of(o: &Ownership, r: Record) -> Ownership {
        Ownership {
            fully_qualified_namespace: o.fully_qualified_namespace.clone(),
            event_hub_name: o.event_hub_name.clone(),
            consumer_group: o.consumer_group.clone(),
            owner_id: r
                .meta(OWNER_ID)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            partition_id: r.partition,
            etag: r.etag.map(Etag::from),
            last_modified_time: r.last_modified,
        }
    }

    /// Gives up every partition this store claimed (as any of the owner ids that claimed
    /// through it) in one hub and group: their ownership blobs get an empty owner, each only
    /// if still ours (`If-Match`), so the next load-balancing round of any instance takes them
    /// at once instead of after the expiration. Returns how many were given up.
    pub async fn relinquish(
        &self,
        namespace: &str,
        hub: &str,
        group: &str,
    ) -> azure_core::Result<usize> {
        let ours = self
            .claimed_as
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut n = 0;
        for r in self
            .read_all(&prefix(namespace, hub, group, "ownership"))
            .await?
        {
            let owner = r.meta(OWNER_ID).unwrap_or_default();
            if owner.is_empty() || !ours.contains(owner) {
                continue;
            }
            let name = blob_name(namespace, hub, group, "ownership", &r.partition);
            if self
                .write(
                    &name,
                    r.etag.as_deref(),
                    metadata(&[(OWNER_ID, String::new())]),
                )
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The checkpoint of one partition, if any.
    pub async fn checkpoint(
        &self,
        namespace: &str,
        hub: &str,
        group: &str,
        partition: &str,
    ) -> azure_core::Result<Option<(Option<String>, Option<i64>)>> {
        Ok(self
            .read(&blob_name(namespace, hub, group, "checkpoint", partition))
            .await?
            .map(|r| {
                (
                    r.meta(OFFSET).map(str::to_owned),
                    r.meta(SEQUENCE_NUMBER).and_then(|s| s.parse().ok()),
                )
            }))
    }
}

#[async_trait::async_trait]
impl CheckpointStore for BlobCheckpointStore {
    async fn claim_ownership(
        &self,
        ownerships: &[Ownership],
    ) -> azure_core::Result<Vec<Ownership>> {
        let mut won = Vec::with_capacity(ownerships.len());
        for o in ownerships {
            let Some(owner) = o.owner_id.clone() else {
                continue;
            };
            self.claimed_as
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(owner.clone());
            let name = blob_name(
                &o.fully_qualified_namespace,
                &o.event_hub_name,
                &o.consumer_group,
                "ownership",
                &o.partition_id,
            );
            let expect = o.etag.as_ref().map(|e| e.as_ref().to_owned());
            match self
                .write(
                    &name,
                    expect.as_deref(),
                    metadata(&[(OWNER_ID, owner.clone())]),
                )
                .await
            {
                Ok(Some(etag)) => won.push(Ownership {
                    etag: etag.map(Etag::from),
                    last_modified_time: Some(OffsetDateTime::now_utc()),
                    ..o.clone()
                }),
                // Claimed by another instance since it was listed: not ours.
                Ok(None) => {}
                // One failed claim is not a failed round: the partition is simply not ours
                // this round (the processor revokes it if it was).
                Err(e) => {
                    tracing::warn!(partition = %o.partition_id, error = %e, "event hubs: ownership claim failed")
                }
            }
        }
        Ok(won)
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        hub: &str,
        group: &str,
    ) -> azure_core::Result<Vec<Checkpoint>> {
        Ok(self
            .read_all(&prefix(namespace, hub, group, "checkpoint"))
            .await?
            .into_iter()
            .map(|r| Checkpoint {
                fully_qualified_namespace: namespace.to_owned(),
                event_hub_name: hub.to_owned(),
                consumer_group: group.to_owned(),
                offset: r.meta(OFFSET).map(str::to_owned),
                sequence_number: r.meta(SEQUENCE_NUMBER).and_then(|s| s.parse().ok()),
                partition_id: r.partition,
            })
            .collect())
    }

    async fn list_ownerships(
        &self,
        namespace: &str,
        hub: &str,
        group: &str,
    ) -> azure_core::Result<Vec<Ownership>> {
        let template = Ownership {
            fully_qualified_namespace: namespace.to_owned(),
            event_hub_name: hub.to_owned(),
            consumer_group: group.to_owned(),
            ..Default::default()
        };
        Ok(self
            .read_all(&prefix(namespace, hub, group, "ownership"))
            .await?
            .into_iter()
            .map(|r| Self::ownership_of(&template, r))
            .collect())
    }

    async fn update_checkpoint(&self, c: Checkpoint) -> azure_core::Result<()> {
        let name = blob_name(
            &c.fully_qualified_namespace,
            &c.event_hub_name,
            &c.consumer_group,
            "checkpoint",
            &c.partition_id,
        );
        let mut pairs = Vec::new();
        if let Some(o) = &c.offset {
            pairs.push((OFFSET, o.clone()));
        }
        if let Some(s) = c.sequence_number {
            pairs.push((SEQUENCE_NUMBER, s.to_string()));
        }
        // Read, compare, write If-Match; a concurrent writer makes us read again.
        for _ in 0..8 {
            let current = self.read(&name).await?;
            let current_seq = current
                .as_ref()
                .and_then(|r| r.meta(SEQUENCE_NUMBER))
                .and_then(|s| s.parse::<i64>().ok());
            if let (Some(have), Some(new)) = (current_seq, c.sequence_number)
                && have >= new
            {
                return Ok(());
            }
            let expect = current.as_ref().and_then(|r| r.etag.clone());
            if current.is_some() && expect.is_none() {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Io,
                    format!("checkpoint store: {name} has no ETag; cannot update it safely"),
                ));
            }
            if self
                .write(&name, expect.as_deref(), metadata(&pairs))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Io,
            format!("checkpoint store: {name} kept changing under 8 attempts"),
        ))
    }
}
