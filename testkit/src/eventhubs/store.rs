//! The hubs and their partitions, in memory: what was sent, in order, with the sequence
//! number, offset and enqueued time the endpoint gave each event, and which partition a
//! partition key goes to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::watch;

use super::owners::Owners;

/// One stored event.
#[derive(Debug)]
pub struct Event {
    pub sequence_number: i64,
    /// Where the event starts in the partition's log, in bytes of the events before it (as
    /// the service's offsets are positions, not counters).
    pub offset: i64,
    pub enqueued_ms: i64,
    pub partition_key: Option<String>,
    /// The event as the producer sent it (for a batch: one entry of the batch).
    pub message: Message<Body<Value>>,
}

/// One partition's log and a signal that changes whenever it grows.
#[derive(Debug)]
pub struct Partition {
    events: Mutex<Vec<Arc<Event>>>,
    next_offset: Mutex<i64>,
    len: watch::Sender<usize>,
}

/// What `$management` reports about a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    pub beginning_sequence_number: i64,
    pub last_enqueued_sequence_number: i64,
    pub last_enqueued_offset: i64,
    pub last_enqueued_ms: i64,
    pub is_empty: bool,
}

impl Partition {
    fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            next_offset: Mutex::new(0),
            len: watch::channel(0).0,
        }
    }

    /// Appends the events of one send, in order, and wakes the receivers.
    pub fn append(&self, messages: Vec<(Message<Body<Value>>, usize)>, key: Option<&str>) {
        let now = now_ms();
        let mut events = self.events.lock().expect("partition lock");
        let mut next_offset = self.next_offset.lock().expect("partition lock");
        for (message, encoded_len) in messages {
            let sequence_number = events.len() as i64;
            // Enqueued times never go backwards within a partition.
            let enqueued_ms = events.last().map_or(now, |e| e.enqueued_ms.max(now));
            events.push(Arc::new(Event {
                sequence_number,
                offset: *next_offset,
                enqueued_ms,
                partition_key: key.map(str::to_owned),
                message,
            }));
            *next_offset += encoded_len.max(1) as i64;
        }
        let len = events.len();
        drop(next_offset);
        drop(events);
        self.len.send_replace(len);
    }

    /// The events from index `from` on (an index is a sequence number here).
    pub fn events_from(&self, from: usize) -> Vec<Arc<Event>> {
        let events = self.events.lock().expect("partition lock");
        events.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// The first index whose event satisfies `accept`, or the end of the log.
    pub fn position(&self, accept: impl Fn(&Event) -> bool) -> usize {
        let events = self.events.lock().expect("partition lock");
        events
            .iter()
            .position(|e| accept(e))
            .unwrap_or(events.len())
    }

    pub fn event_count(&self) -> usize {
        self.events.lock().expect("partition lock").len()
    }

    /// A receiver that changes whenever events are appended.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.len.subscribe()
    }

    pub fn info(&self) -> PartitionInfo {
        let events = self.events.lock().expect("partition lock");
        match events.last() {
            None => PartitionInfo {
                beginning_sequence_number: -1,
                last_enqueued_sequence_number: -1,
                last_enqueued_offset: -1,
                last_enqueued_ms: 0,
                is_empty: true,
            },
            Some(last) => PartitionInfo {
                beginning_sequence_number: events[0].sequence_number,
                last_enqueued_sequence_number: last.sequence_number,
                last_enqueued_offset: last.offset,
                last_enqueued_ms: last.enqueued_ms,
                is_empty: false,
            },
        }
    }
}

/// One event hub.
#[derive(Debug)]
pub struct Hub {
    pub name: String,
    pub created_ms: i64,
    pub partitions: Vec<Partition>,
    pub owners: Owners,
    round_robin: AtomicUsize,
}

impl Hub {
    fn new(name: &str, partitions: usize) -> Self {
        Self {
            name: name.to_owned(),
            created_ms: now_ms(),
            partitions: (0..partitions).map(|_| Partition::new()).collect(),
            owners: Owners::default(),
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The partition a send to the hub itself goes to: by key hash, else round-robin.
    pub fn partition_for(&self, key: Option<&str>) -> usize {
        match key {
            Some(key) => partition_for_key(key, self.partitions.len()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.len(),
        }
    }

    /// The partition with this id ("0", "1", …), if it exists.
    pub fn partition(&self, id: &str) -> Option<(usize, &Partition)> {
        let index: usize = id.parse().ok()?;
        // "01" is not a partition id.
        (index.to_string() == id)
            .then(|| self.partitions.get(index).map(|p| (index, p)))
            .flatten()
    }
}

/// Every hub of the namespace, by lower-cased name (hub names are case-insensitive).
#[derive(Debug)]
pub struct Namespace {
    hubs: HashMap<String, Arc<Hub>>,
}

impl Namespace {
    pub fn new<'a>(hubs: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        Self {
            hubs: hubs
                .into_iter()
                .map(|(name, partitions)| {
                    (name.to_lowercase(), Arc::new(Hub::new(name, partitions)))
                })
                .collect(),
        }
    }

    pub fn hub(&self, name: &str) -> Option<&Arc<Hub>> {
        self.hubs.get(&name.to_lowercase())
    }
}

/// The partition a partition key maps to, the way Event Hubs maps it: Bob Jenkins' lookup3
/// `hashlittle2` over the key's UTF-8 bytes with both seeds 0, the two 32-bit results xored
/// and cut to a signed 16-bit value, then `|hash % partition_count|`. This is the mapping
/// the service's gateway and the SDKs' buffered producers use, so a key lands here on the
/// partition it would land on in Azure. It depends on nothing but the key's bytes, so it is
/// stable across runs, machines and versions.
pub fn partition_for_key(key: &str, partition_count: usize) -> usize {
    let hash = partition_key_hash(key) as i32;
    (hash % partition_count as i32).unsigned_abs() as usize
}

/// The 16-bit partition key hash (see [`partition_for_key`]).
pub fn partition_key_hash(key: &str) -> i16 {
    let (primary, secondary) = hashlittle2(key.as_bytes(), 0, 0);
    (primary ^ secondary) as u16 as i16
}

/// lookup3's `hashlittle2` (public domain, Bob Jenkins 2006): returns `(c, b)`.
fn hashlittle2(data: &[u8], seed_c: u32, seed_b: u32) -> (u32, u32) {
    let init = 0xdead_beef_u32
        .wrapping_add(data.len() as u32)
        .wrapping_add(seed_c);
    let (mut a, mut b, mut c) = (init, init, init.wrapping_add(seed_b));
    let word = |bytes: &[u8]| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let mut rest = data;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return (c, b);
    }
    // The last 1..=12 bytes, zero-padded: adding the missing bytes as zeros is what
    // lookup3's byte-wise tail does.
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    final_mix(&mut a, &mut b, &mut c);
    (c, b)
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (x, y, z, r) in [
        (0, 2, 1, 4),
        (1, 0, 2, 6),
        (2, 1, 0, 8),
        (0, 2, 1, 16),
        (1, 0, 2, 19),
        (2, 1, 0, 4),
    ] {
        let mut v = [*a, *b, *c];
        // x -= y; x ^= rot(y, r); y += z
        v[x] = v[x].wrapping_sub(v[y]);
        v[x] ^= v[y].rotate_left(r);
        v[y] = v[y].wrapping_add(v[z]);
        [*a, *b, *c] = v;
    }
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (x, y, r) in [
        (2, 1, 14),
        (0, 2, 11),
        (1, 0, 25),
        (2, 1, 16),
        (0, 2, 4),
        (1, 0, 14),
        (2, 1, 24),
    ] {
        let mut v = [*a, *b, *c];
        // x ^= y; x -= rot(y, r)
        v[x] ^= v[y];
        v[x] = v[x].wrapping_sub(v[y].rotate_left(r));
        [*a, *b, *c] = v;
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published values of the service's partition key hash (the Azure SDKs test theirs
    /// against the same ones), so this one is the hash Azure uses, today and in every run.
    #[test]
    fn the_partition_key_hash_is_stable_and_matches_the_service() {
        let cases: &[(&str, i16)] = &[
            ("7", -15263),
            ("131", 30562),
            ("7149583486996073602", 12977),
            ("FWfAT", -22341),
            ("sOdeEAsyQoEuEFPGerWO", -6503),
            ("!c*_!I@1^c", 15372),
            ("p4*!jioeO/z-!-;w:dh", -3104),
            ("$0cb", 26269),
            ("-4189260826195535198", 453),
        ];
        for (key, expected) in cases {
            assert_eq!(partition_key_hash(key), *expected, "hash of {key:?}");
        }
        // Twelve bytes exactly, and a multiple of twelve: the tail is a whole block.
        assert_eq!(
            partition_key_hash("abcdefghijkl"),
            partition_key_hash("abcdefghijkl")
        );
        for count in 1..=32 {
            for (key, _) in cases {
                assert!(partition_for_key(key, count) < count);
            }
            assert!(partition_for_key("", count) < count);
        }
        assert_eq!(partition_for_key("7", 4), 15263 % 4);
    }

    #[test]
    fn offsets_grow_by_encoded_size_and_sequence_numbers_by_one() {
        let p = Partition::new();
        let m = || {
            Message::builder()
                .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                    Value::Null,
                )))
                .build()
        };
        p.append(vec![(m(), 10), (m(), 7)], Some("k"));
        p.append(vec![(m(), 3)], None);
        let events = p.events_from(0);
        let got: Vec<(i64, i64)> = events
            .iter()
            .map(|e| (e.sequence_number, e.offset))
            .collect();
        assert_eq!(got, vec![(0, 0), (1, 10), (2, 17)]);
        assert_eq!(events[0].partition_key.as_deref(), Some("k"));
        let info = p.info();
        assert_eq!(info.last_enqueued_sequence_number, 2);
        assert_eq!(info.last_enqueued_offset, 17);
        assert!(!info.is_empty);
        assert!(
            events
                .windows(2)
                .all(|w| w[0].enqueued_ms <= w[1].enqueued_ms)
        );
    }
}
