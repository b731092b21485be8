//! The load-balanced Event Hubs source: the SDK's `EventProcessor` with our Blob checkpoint
//! store, on Azurite and the testkit's endpoint. The store's layout and ETag guard are
//! checked directly; then real `glucoguard run` processes share the partitions, one is
//! SIGKILLed mid-stream and started again, and the stored result is compared with the same
//! readings through the embedded source.

use crate::archive::azurite::{self, Azurite};
use crate::eventhubs::{Endpoint, consumer_all, partition_for_key, publish, start_endpoint};
use crate::mqtt::{
    alerts_of, check_exactly_once, embedded_alerts, ids_of, listed_reading_ids, simulated,
};
use azure_messaging_eventhubs::CheckpointStore;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership};
use glucoguard::archive::AzureBackend;
use glucoguard::model::Body;
use glucoguard::sources::eventhubs::blob_store::{BlobCheckpointStore, blob_name};
use glucoguard::store::prelude::*;
use glucoguard::store::sqlite::SqliteStore;
use object_store::ObjectStore;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTAINER: &str = "checkpoints";
const KEY_ENV: &str = "GG_TEST_CHECKPOINT_KEY";

fn backend(az: &Azurite) -> AzureBackend {
    AzureBackend {
        account: azurite::ACCOUNT.to_owned(),
        container: CONTAINER.to_owned(),
        key_env: Some(KEY_ENV.to_owned()),
        sas_env: None,
        endpoint: Some(az.endpoint()),
    }
}

fn blobs(az: &Azurite) -> Arc<dyn ObjectStore> {
    glucoguard::archive::azure_store(&backend(az), Duration::from_secs(10), "test", |_| {
        Some(azurite::KEY.to_owned())
    })
    .unwrap()
}

fn ownership(partition: &str, owner: &str) -> Ownership {
    Ownership {
        fully_qualified_namespace: "GG-NS.servicebus.windows.net".to_owned(),
        event_hub_name: "Glucose_Readings".to_owned(),
        consumer_group: "$Default".to_owned(),
        partition_id: partition.to_owned(),
        owner_id: Some(owner.to_owned()),
        ..Default::default()
    }
}

/// The metadata of one blob, as another SDK's store would read it.
async fn metadata_of(blobs: &dyn ObjectStore, name: &str) -> BTreeMap<String, String> {
    let got = blobs
        .get(&object_store::path::Path::parse(name).unwrap())
        .await
        .unwrap_or_else(|e| panic!("blob {name}: {e}"));
    got.attributes
        .iter()
        .filter_map(|(k, v)| match k {
            object_store::Attribute::Metadata(k) => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_checkpoint_store_keeps_the_official_layout_and_lets_one_claimant_win() {
    let az = tokio::task::block_in_place(|| Azurite::start(CONTAINER));
    let raw = blobs(&az);
    let store = BlobCheckpointStore::new(raw.clone());
    let (ns, hub, group) = (
        "GG-NS.servicebus.windows.net",
        "Glucose_Readings",
        "$Default",
    );

    // Two instances list the same (empty) state and claim partition 0 at once: one wins.
    let a = store
        .claim_ownership(&[ownership("0", "a"), ownership("1", "a")])
        .await
        .unwrap();
    let b = store.claim_ownership(&[ownership("0", "b")]).await.unwrap();
    assert_eq!(a.len(), 2, "a claims both free partitions: {a:?}");
    assert!(
        b.is_empty(),
        "b's claim of a partition a claimed first fails: {b:?}"
    );
    // The official names (lower-cased) and metadata.
    let name = blob_name(ns, hub, group, "ownership", "0");
    assert_eq!(
        name,
        "gg-ns.servicebus.windows.net/glucose_readings/$default/ownership/0"
    );
    assert_eq!(
        metadata_of(&*raw, &name).await,
        BTreeMap::from([("ownerid".to_owned(), "a".to_owned())])
    );
    // A claim with a stale ETag loses; with the current one it wins.
    let listed = store.list_ownerships(ns, hub, group).await.unwrap();
    assert_eq!(listed.len(), 2);
    let zero = listed
        .iter()
        .find(|o| o.partition_id == "0")
        .unwrap()
        .clone();
    assert_eq!(zero.owner_id.as_deref(), Some("a"));
    assert!(
        zero.etag.is_some() && zero.last_modified_time.is_some(),
        "{zero:?}"
    );
    let renewed = store
        .claim_ownership(std::slice::from_ref(&zero))
        .await
        .unwrap();
    assert_eq!(renewed.len(), 1, "a renews with the ETag it listed");
    let stale = Ownership {
        owner_id: Some("b".to_owned()),
        ..zero.clone()
    };
    assert!(
        store.claim_ownership(&[stale]).await.unwrap().is_empty(),
        "a steal with the ETag before a's renewal fails"
    );
    let steal = Ownership {
        owner_id: Some("b".to_owned()),
        ..renewed[0].clone()
    };
    assert_eq!(store.claim_ownership(&[steal]).await.unwrap().len(), 1);

    // Checkpoints: the official metadata; never moved back.
    let cp = |seq: i64| Checkpoint {
        fully_qualified_namespace: ns.to_owned(),
        event_hub_name: hub.to_owned(),
        consumer_group: group.to_owned(),
        partition_id: "1".to_owned(),
        offset: Some((seq * 100).to_string()),
        sequence_number: Some(seq),
    };
    store.update_checkpoint(cp(10)).await.unwrap();
    store.update_checkpoint(cp(5)).await.unwrap();
    let cname = blob_name(ns, hub, group, "checkpoint", "1");
    assert_eq!(
        metadata_of(&*raw, &cname).await,
        BTreeMap::from([
            ("offset".to_owned(), "1000".to_owned()),
            ("sequencenumber".to_owned(), "10".to_owned())
        ]),
        "an older position does not overwrite a newer one"
    );
    store.update_checkpoint(cp(12)).await.unwrap();
    let listed = store.list_checkpoints(ns, hub, group).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].partition_id, "1");
    assert_eq!(listed[0].sequence_number, Some(12));
    assert_eq!(listed[0].offset.as_deref(), Some("1200"));

    // Giving up: only what this store's claimants still own, each left without an owner.
    let given_up = store.relinquish(ns, hub, group).await.unwrap();
    assert_eq!(
        given_up, 2,
        "partitions 0 (b) and 1 (a) were claimed through this store"
    );
    let listed = store.list_ownerships(ns, hub, group).await.unwrap();
    assert!(
        listed.iter().all(|o| o.owner_id.is_none()),
        "relinquished partitions have no owner: {listed:?}"
    );
    // A claim without an ETag means "nobody claimed it yet": the blob exists, so it fails.
    let other = BlobCheckpointStore::new(raw.clone());
    let won = other.claim_ownership(&[ownership("0", "c")]).await.unwrap();
    assert!(
        won.is_empty(),
        "a claim without the blob's ETag won: {won:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several hosts on one consumer group.

/// How long the hosts' claims last unrenewed (the processor renews every 500 ms).
const EXPIRATION_SECS: u64 = 3;

struct Hosts {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    log: PathBuf,
    started: usize,
}

struct Host {
    child: Child,
    run: usize,
    addr: String,
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

impl Hosts {
    fn new(ep: &Endpoint, az: &Azurite) -> Hosts {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shared.db");
        let config = dir.path().join("glucoguard.toml");
        let rule = crate::support::plugin_path("glucoguard_default_rule");
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let toml = format!(
            r#"[store]
kind = "sqlite"
path = {db}

[[rules]]
path = {rule}

[pipeline]
max_wait_ms = 20

[notify]
console = false

[notify.eventhubs]
connection_string_env = "GG_TEST_EVENTHUBS"
endpoint = {endpoint}
hub = "alerts"

[[sources]]
kind = "eventhubs"
connection_string_env = "GG_TEST_EVENTHUBS"
endpoint = {endpoint}
checkpoint_interval_ms = 100
reconnect_max_secs = 1
balance_interval_ms = 500
ownership_expiration_secs = {EXPIRATION_SECS}

[sources.checkpoint_store]
account = {account}
container = {container}
key_env = "{KEY_ENV}"
endpoint = {blob}
"#,
            db = q(db.to_str().unwrap()),
            rule = q(rule.to_str().unwrap()),
            endpoint = q(&ep.endpoint),
            account = q(azurite::ACCOUNT),
            container = q(CONTAINER),
            blob = q(&az.endpoint()),
        );
        std::fs::write(&config, toml).unwrap();
        Hosts {
            log: dir.path().join("hosts.log"),
            dir,
            config,
            db,
            started: 0,
        }
    }

    fn start(&mut self, ep: &Endpoint) -> Host {
        use std::io::Write;
        self.started += 1;
        let run = self.started;
        let addr = free_addr();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== host {run} ===").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_glucoguard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &addr])
            .env("GLUCOGUARD_LOG", "warn")
            .env("GG_TEST_EVENTHUBS", &ep.connection_string)
            .env(KEY_ENV, azurite::KEY)
            .env_remove("GLUCOGUARD_CONFIG")
            .env_remove("GLUCOGUARD_LISTEN")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("glucoguard starts");
        let mut host = Host { child, run, addr };
        self.wait_healthy(&mut host);
        host
    }

    fn wait_healthy(&self, host: &mut Host) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = Instant::now();
        loop {
            if let Some(status) = host.child.try_wait().unwrap() {
                panic!(
                    "host {} exited with {status} before /health answered\n{}",
                    host.run,
                    self.log_tail()
                );
            }
            if let Ok(r) = agent.get(format!("http://{}/health", host.addr)).call()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "host {} did not answer /health within 30 s\n{}",
                host.run,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- hosts' stderr (last 60 lines) ---\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }
}

impl Host {
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM; the exit status within 30 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("host {} did not exit within 30 s of SIGTERM", self.run);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Owner id → the glucose hub's partitions it holds now (expired claims left out).
async fn owners(
    store: &BlobCheckpointStore,
    namespace: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let now = std::time::SystemTime::now();
    for o in store
        .list_ownerships(namespace, "glucose_readings", "$Default")
        .await
        .unwrap()
    {
        let fresh = o
            .last_modified_time
            .is_some_and(|t| t + Duration::from_secs(EXPIRATION_SECS) > now);
        if let (Some(owner), true) = (o.owner_id, fresh) {
            out.entry(owner).or_default().insert(o.partition_id);
        }
    }
    out
}

async fn wait_owners(
    store: &BlobCheckpointStore,
    namespace: &str,
    hosts: &Hosts,
    what: &str,
    done: impl Fn(&BTreeMap<String, BTreeSet<String>>) -> bool,
) -> BTreeMap<String, BTreeSet<String>> {
    let started = Instant::now();
    loop {
        let now = owners(store, namespace).await;
        if done(&now) {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: ownership is {now:?} after 60 s\n{}",
            hosts.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every glucose partition owned, by exactly `n` owners, none holding more than its share.
fn balanced(n: usize) -> impl Fn(&BTreeMap<String, BTreeSet<String>>) -> bool {
    move |o| {
        let owned: usize = o.values().map(BTreeSet::len).sum();
        o.len() == n && owned == PARTITIONS && o.values().all(|p| p.len() <= PARTITIONS.div_ceil(n))
    }
}

const PARTITIONS: usize = 4;

async fn stored_count(db: &Path) -> u64 {
    let store = SqliteStore::open(db).await.unwrap();
    let c = store.counts().await.unwrap();
    c.glucose_readings + c.device_readings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_share_four_partitions_and_take_over_from_a_killed_one_with_nothing_lost() {
    let ep = Arc::new(start_endpoint(&[
        ("glucose_readings", PARTITIONS),
        ("device_readings", 2),
        ("alerts", 2),
    ]));
    let az = tokio::task::block_in_place(|| Azurite::start(CONTAINER));
    let store = BlobCheckpointStore::new(blobs(&az));
    // The namespace the client derives from `Endpoint=sb://127.0.0.1:PORT`: the host.
    let namespace = "127.0.0.1";
    let work = tempfile::tempdir().unwrap();
    let events = simulated(31, 12, 8);
    let sent = ids_of(&events);
    let reference = embedded_alerts(&events, work.path()).await;
    let mut patients_by_partition: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for e in &events {
        let r = glucoguard::model::parse::parse_reading(e.to_json_line().as_bytes()).unwrap();
        if let Body::Glucose(g) = &r.body {
            patients_by_partition
                .entry(partition_for_key(&g.patient_id.to_string(), PARTITIONS))
                .or_default()
                .insert(g.patient_id);
        }
    }
    assert_eq!(
        patients_by_partition.len(),
        PARTITIONS,
        "every partition carries patients: {patients_by_partition:?}"
    );

    let mut hosts = Hosts::new(&ep, &az);
    let a = hosts.start(&ep);
    let mut b = hosts.start(&ep);
    wait_owners(
        &store,
        namespace,
        &hosts,
        "two hosts split the partitions",
        balanced(2),
    )
    .await;

    // The stream: 40 chunks, 150 ms apart, across the third host, the kill and the restart.
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let publisher = {
        let ep = ep.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let size = events.len().div_ceil(40);
            for (i, chunk) in events.chunks(size).enumerate() {
                publish(&ep, chunk).await;
                let _ = chunk_tx.send(i);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    while chunk_rx.recv().await.unwrap() < 4 {}
    let c = hosts.start(&ep);
    let three = wait_owners(
        &store,
        namespace,
        &hosts,
        "three hosts split the partitions",
        balanced(3),
    )
    .await;
    // SIGKILL one of them mid-stream: the one that started second.
    while chunk_rx.recv().await.unwrap() < 14 {}
    let before_kill = owners(&store, namespace).await;
    b.kill();
    // Its claims expire and the two others take its partitions over from its checkpoints.
    let after = wait_owners(
        &store,
        namespace,
        &hosts,
        "the two survivors take the killed host's partitions over",
        balanced(2),
    )
    .await;
    let killed_owner: Vec<&String> = before_kill
        .keys()
        .filter(|o| !after.contains_key(*o))
        .collect();
    assert_eq!(
        killed_owner.len(),
        1,
        "one owner vanished: before {before_kill:?}, after {after:?}"
    );
    let killed_partitions = before_kill[killed_owner[0]].clone();
    assert!(!killed_partitions.is_empty());
    // Started again, it takes its share back.
    while chunk_rx.recv().await.unwrap() < 26 {}
    b = hosts.start(&ep);
    wait_owners(
        &store,
        namespace,
        &hosts,
        "the restarted host rejoins",
        balanced(3),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the publisher finishes")
        .unwrap();

    let n = events.len() as u64;
    let started = Instant::now();
    while stored_count(&hosts.db).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of {n} readings stored after 90 s\n{}",
            stored_count(&hosts.db).await,
            hosts.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in [a, b, c] {
        let run = h.run;
        let status = h.terminate();
        assert!(
            status.success(),
            "host {run} exited with {status}\n{}",
            hosts.log_tail()
        );
    }

    let db = SqliteStore::open(&hosts.db).await.unwrap();
    assert_eq!(
        db.counts().await.unwrap().dead_letters,
        0,
        "no dead letters"
    );
    check_exactly_once(&listed_reading_ids(&db).await, &sent);
    // Exactly the alerts of the same readings through one embedded host: windows of the
    // taken-over patients were refreshed from the store, so no rolling average came out
    // different on the host that took a partition over.
    let ids = |s: &BTreeSet<(String, bool)>| -> BTreeSet<String> {
        s.iter().map(|(id, _)| id.clone()).collect()
    };
    let stored = alerts_of(&db).await;
    assert!(
        reference.len() > 10,
        "the stream alerts: {}",
        reference.len()
    );
    assert_eq!(
        ids(&stored),
        ids(&reference),
        "the alerts equal those of the same readings through the embedded source (three hosts of {three:?}, one killed)"
    );

    // Every alert stored as notified reached the alerts hub, but those the killed host stored
    // and had not yet handed to the hub when it died: the notifier publishes after the
    // store's commit, from memory (at most once across a SIGKILL until the outbox of issue
    // 13). Those can only be of patients on the killed host's partitions.
    let on_hub = consumer_all(&ep, "alerts", 2).await;
    let hub_ids: BTreeSet<String> = on_hub.iter().cloned().collect();
    let by_id: BTreeMap<String, glucoguard::model::Alert> = db
        .alerts(1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| (a.id.clone(), a))
        .collect();
    assert!(
        hub_ids.iter().all(|id| by_id.contains_key(id)),
        "every alert on the hub is stored"
    );
    let notified: BTreeSet<String> = stored
        .iter()
        .filter(|(_, n)| *n)
        .map(|(id, _)| id.clone())
        .collect();
    let missing: Vec<&String> = notified.difference(&hub_ids).collect();
    let killed_patients: BTreeSet<u64> = killed_partitions
        .iter()
        .flat_map(|p| {
            patients_by_partition[&p.parse::<usize>().unwrap()]
                .iter()
                .copied()
        })
        .collect();
    for id in &missing {
        let p = by_id[*id]
            .patient_id
            .expect("glucose alerts name their patient");
        assert!(
            killed_patients.contains(&p),
            "alert {id} (patient {p}) is stored as notified but never reached the hub, and its \
             partition was not the killed host's ({killed_partitions:?})"
        );
    }
    assert!(
        missing.len() <= 3,
        "{} notified alerts never reached the hub: more than one kill's in-flight batch",
        missing.len()
    );
    eprintln!(
        "{} readings, {} alerts ({} notified), {} events on the alerts hub ({} distinct), {} lost with the SIGKILL",
        n,
        stored.len(),
        notified.len(),
        on_hub.len(),
        hub_ids.len(),
        missing.len()
    );
}
