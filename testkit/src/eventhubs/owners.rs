//! Owner levels (`com.microsoft:epoch`) of the receivers on each (consumer group, partition),
//! with the service's rules: a receiver with an owner level at least that of every receiver
//! already there takes the partition and the others are disconnected; one with a lower
//! owner level is refused; a receiver without an owner level is refused while one with an
//! owner level is there, and is disconnected when one arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a receiver was refused or disconnected: the service's message.
pub type Displacement = String;

#[derive(Debug)]
struct Attached {
    id: u64,
    owner_level: Option<i64>,
    disconnect: Option<oneshot::Sender<Displacement>>,
}

/// The receivers attached per (lower-cased consumer group, partition).
type Registry = Arc<Mutex<HashMap<(String, usize), Vec<Attached>>>>;

/// The receivers attached per (consumer group, partition) of one hub.
#[derive(Debug, Default)]
pub struct Owners {
    attached: Registry,
    next_id: AtomicU64,
}

/// A receiver's place among the owners; drop it (or call `release`) when the link ends.
#[derive(Debug)]
pub struct Claim {
    attached: Registry,
    key: (String, usize),
    id: u64,
    /// Resolves when a receiver with a higher (or equal) owner level takes over.
    pub disconnected: oneshot::Receiver<Displacement>,
}

impl Owners {
    /// Registers a receiver, disconnecting the ones it displaces, or says why it is refused.
    pub fn claim(
        &self,
        consumer_group: &str,
        partition: usize,
        owner_level: Option<i64>,
    ) -> Result<Claim, Displacement> {
        // Consumer group names are case-insensitive in Event Hubs.
        let key = (consumer_group.to_lowercase(), partition);
        let mut attached = self.attached.lock().expect("owners lock");
        let here = attached.entry(key.clone()).or_default();
        let highest = here.iter().filter_map(|a| a.owner_level).max();
        match (owner_level, highest) {
            (Some(level), Some(highest)) if level < highest => {
                return Err(format!(
                    "Receiver with epoch '{level}' cannot be created because a receiver with a \
                     higher epoch '{highest}' already exists on partition '{partition}' of \
                     consumer group '{consumer_group}'."
                ));
            }
            (None, Some(highest)) => {
                return Err(format!(
                    "A receiver without an epoch cannot be created because a receiver with \
                     epoch '{highest}' exists on partition '{partition}' of consumer group \
                     '{consumer_group}'."
                ));
            }
            (Some(level), _) => {
                for old in here.iter_mut() {
                    if let Some(disconnect) = old.disconnect.take() {
                        let old_level = old
                            .owner_level
                            .map_or_else(|| "none".to_owned(), |l| l.to_string());
                        let _ = disconnect.send(format!(
                            "New receiver with higher epoch of '{level}' is created hence \
                             current receiver with epoch '{old_level}' is getting disconnected. \
                             If you are recreating the receiver, make sure a higher epoch is used."
                        ));
                    }
                }
                here.clear();
            }
            (None, None) => {}
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        here.push(Attached {
            id,
            owner_level,
            disconnect: Some(tx),
        });
        Ok(Claim {
            attached: self.attached.clone(),
            key,
            id,
            disconnected: rx,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut attached = self.attached.lock().expect("owners lock");
        if let Some(here) = attached.get_mut(&self.key) {
            here.retain(|a| a.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_owner_level_displaces_and_a_lower_one_is_refused() {
        let owners = Owners::default();
        let mut first = owners.claim("$Default", 0, Some(1)).unwrap();
        assert!(owners.claim("$default", 0, Some(0)).is_err());
        assert!(owners.claim("$Default", 0, None).is_err());
        // Another partition and another group are independent.
        let _other = owners.claim("$Default", 1, None).unwrap();
        let _group = owners.claim("analytics", 0, Some(0)).unwrap();
        let second = owners.claim("$Default", 0, Some(2)).unwrap();
        assert!(
            first
                .disconnected
                .try_recv()
                .unwrap()
                .contains("higher epoch of '2'")
        );
        drop(first);
        assert!(owners.claim("$Default", 0, Some(1)).is_err());
        drop(second);
        assert!(owners.claim("$Default", 0, Some(1)).is_ok());
    }

    #[test]
    fn receivers_without_owner_level_share_until_one_with_a_level_arrives() {
        let owners = Owners::default();
        let mut a = owners.claim("$Default", 0, None).unwrap();
        let mut b = owners.claim("$Default", 0, None).unwrap();
        let _c = owners.claim("$Default", 0, Some(0)).unwrap();
        assert!(a.disconnected.try_recv().is_ok());
        assert!(b.disconnected.try_recv().is_ok());
    }
}
