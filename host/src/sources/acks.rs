//! The in-order acknowledgement queue: of one MQTT connection, and of one Event Hubs
//! partition (whose position advances only over the contiguous prefix of durable events;
//! it never resets, since positions there are absolute).
//!
//! MQTT wants a client's PUBACKs in the order the PUBLISHes arrived (MQTT 5, 4.6), while the
//! pipeline makes items durable batch by batch and their `Ack`s may fire in any order. Each
//! QoS 1 message takes a [`Ticket`] when it arrives; its `Ack` completes the ticket; only the
//! contiguous prefix of completed tickets is released upstream, in arrival order. A message
//! that was never made durable (its `Ack` dropped, e.g. at shutdown) holds back everything
//! after it: the broker redelivers the lot on the next session, never loses one.
//!
//! Packet ids belong to one connection, so the queue has a generation: a reconnect
//! ([`InOrderAcks::reset`]) forgets every ticket, and completing a ticket of an earlier
//! generation does nothing (the broker resends those messages; the pipeline recognises the
//! copies as duplicates and acknowledges them again, on the connection that delivered them).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What owns an in-order queue (an MQTT connection, an Event Hubs partition): where a
/// [`Pending`] ticket is settled, and whose status counts what was made durable.
pub(crate) trait Settle: Send + Sync + 'static {
    fn settle(&self, ticket: Ticket, durable: bool);
    fn status(&self) -> &super::StatusCell;
}

/// An item's ticket on its way through the pipeline: completed when the item is durable
/// ([`Pending::durable`], from its `Ack`), abandoned when dropped unfired (not taken, or its
/// `Ack` dropped), so it and everything after it stay unacknowledged upstream.
pub(crate) struct Pending<S: Settle> {
    owner: Arc<S>,
    ticket: Ticket,
    armed: bool,
}

impl<S: Settle> Pending<S> {
    pub(crate) fn new(owner: Arc<S>, ticket: Ticket) -> Self {
        Pending {
            owner,
            ticket,
            armed: true,
        }
    }

    pub(crate) fn durable(mut self) {
        self.armed = false;
        self.owner
            .status()
            .acknowledged
            .fetch_add(1, Ordering::AcqRel);
        self.owner.settle(self.ticket, true);
    }
}

impl<S: Settle> Drop for Pending<S> {
    fn drop(&mut self) {
        if self.armed {
            self.owner.settle(self.ticket, false);
        }
    }
}

/// A message's place in the queue of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the pipeline, not yet durable.
    Waiting,
    /// Durable; released once everything before it is.
    Done,
    /// Will never be durable on this connection (its `Ack` was dropped).
    Abandoned,
}

#[derive(Debug)]
pub struct InOrderAcks<T> {
    generation: u64,
    /// Sequence number of `slots[0]`.
    first: u64,
    slots: VecDeque<(T, State)>,
    waiting: usize,
}

impl<T> Default for InOrderAcks<T> {
    fn default() -> Self {
        InOrderAcks {
            generation: 0,
            first: 0,
            slots: VecDeque::new(),
            waiting: 0,
        }
    }
}

impl<T> InOrderAcks<T> {
    /// A message arrived: it is acknowledged after every message before it.
    pub fn push(&mut self, value: T) -> Ticket {
        let seq = self.first + self.slots.len() as u64;
        self.slots.push_back((value, State::Waiting));
        self.waiting += 1;
        Ticket {
            generation: self.generation,
            seq,
        }
    }

    fn slot(&mut self, t: Ticket) -> Option<&mut (T, State)> {
        if t.generation != self.generation || t.seq < self.first {
            return None;
        }
        self.slots.get_mut((t.seq - self.first) as usize)
    }

    fn settle(&mut self, t: Ticket, to: State) -> bool {
        match self.slot(t) {
            Some(slot) if slot.1 == State::Waiting => {
                slot.1 = to;
                self.waiting -= 1;
                true
            }
            _ => false,
        }
    }

    /// The message is durable. `false` for a ticket of an earlier connection (or one already
    /// settled): nothing to release for it here.
    pub fn complete(&mut self, t: Ticket) -> bool {
        self.settle(t, State::Done)
    }

    /// The message will not be durable on this connection; it and everything after it stay
    /// unacknowledged.
    pub fn abandon(&mut self, t: Ticket) -> bool {
        self.settle(t, State::Abandoned)
    }

    /// Hands the completed prefix to `send`, oldest first, and forgets it; stops at the first
    /// message not completed or the first `send` that returns `false` (that one is kept and
    /// offered again next time). Returns how many were released.
    pub fn release(&mut self, mut send: impl FnMut(&T) -> bool) -> usize {
        let mut released = 0;
        while let Some((value, State::Done)) = self.slots.front() {
            if !send(value) {
                break;
            }
            self.slots.pop_front();
            self.first += 1;
            released += 1;
        }
        released
    }

    /// The connection is gone: every ticket so far is void. Returns how many messages were
    /// not released (the broker redelivers them).
    pub fn reset(&mut self) -> usize {
        let dropped = self.slots.len();
        self.slots.clear();
        self.waiting = 0;
        self.generation += 1;
        self.first = 0;
        dropped
    }

    /// Messages handed to the pipeline on this connection and not yet settled.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Messages of this connection not yet released (waiting, done behind one that is not,
    /// or abandoned).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The head is completed and could be released now.
    pub fn releasable(&self) -> bool {
        matches!(self.slots.front(), Some((_, State::Done)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(q: &mut InOrderAcks<u16>) -> Vec<u16> {
        let mut out = Vec::new();
        q.release(|&p| {
            out.push(p);
            true
        });
        out
    }

    #[test]
    fn acks_completing_out_of_order_release_only_the_contiguous_prefix() {
        let mut q = InOrderAcks::default();
        let t: Vec<Ticket> = (1..=6u16).map(|pkid| q.push(pkid)).collect();
        assert_eq!(q.waiting(), 6);
        // The third and second finish first: nothing can go before the first.
        assert!(q.complete(t[2]));
        assert!(q.complete(t[1]));
        assert_eq!(released(&mut q), Vec::<u16>::new());
        assert!(!q.releasable());
        // The first completes: 1, 2, 3 go, in arrival order; 4 is still in the pipeline.
        assert!(q.complete(t[0]));
        assert_eq!(released(&mut q), vec![1, 2, 3]);
        assert!(q.complete(t[5]));
        assert_eq!(released(&mut q), Vec::<u16>::new());
        assert!(q.complete(t[3]));
        assert_eq!(released(&mut q), vec![4]);
        assert!(q.complete(t[4]));
        assert_eq!(released(&mut q), vec![5, 6]);
        assert!(q.is_empty() && q.waiting() == 0);
        // Completing twice releases nothing twice.
        assert!(!q.complete(t[4]));
        assert_eq!(released(&mut q), Vec::<u16>::new());
    }

    #[test]
    fn a_refused_send_keeps_the_message_for_the_next_release() {
        let mut q = InOrderAcks::default();
        let a = q.push(1u16);
        let b = q.push(2u16);
        q.complete(a);
        q.complete(b);
        let mut offered = Vec::new();
        assert_eq!(
            q.release(|&p| {
                offered.push(p);
                p != 2
            }),
            1
        );
        assert_eq!(offered, vec![1, 2]);
        assert!(q.releasable());
        assert_eq!(released(&mut q), vec![2]);
    }

    #[test]
    fn an_abandoned_message_holds_back_everything_after_it() {
        let mut q = InOrderAcks::default();
        let t: Vec<Ticket> = (1..=4u16).map(|pkid| q.push(pkid)).collect();
        q.complete(t[0]);
        assert!(q.abandon(t[1]));
        q.complete(t[2]);
        q.complete(t[3]);
        assert_eq!(released(&mut q), vec![1]);
        assert_eq!(released(&mut q), Vec::<u16>::new());
        assert_eq!((q.waiting(), q.len()), (0, 3));
        // A completion after the abandonment changes nothing.
        assert!(!q.complete(t[1]));
        assert_eq!(released(&mut q), Vec::<u16>::new());
    }

    #[test]
    fn tickets_of_an_earlier_connection_release_nothing_on_the_next() {
        let mut q = InOrderAcks::default();
        let old: Vec<Ticket> = (1..=3u16).map(|pkid| q.push(pkid)).collect();
        q.complete(old[0]);
        assert_eq!(q.reset(), 3);
        // The broker reuses packet ids on the new connection.
        let new: Vec<Ticket> = (1..=2u16).map(|pkid| q.push(pkid)).collect();
        for t in &old {
            assert!(!q.complete(*t), "a stale ticket must not complete");
        }
        assert_eq!(released(&mut q), Vec::<u16>::new());
        assert_eq!(q.waiting(), 2);
        q.complete(new[0]);
        assert_eq!(released(&mut q), vec![1]);
        q.complete(new[1]);
        assert_eq!(released(&mut q), vec![2]);
    }
}
