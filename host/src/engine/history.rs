//! Per-subject reading history by event time, and the window aggregates rules receive.
//!
//! Window of a reading at time t over duration d: the same subject's readings with event time
//! in (t − d, t], the reading itself and equal timestamps included; a reading exactly d older
//! is outside. `previous` is the latest reading strictly before t. Out-of-order arrivals are
//! placed by event time, and a reading seen twice (same id) is kept once.

use crate::model::{EpochMs, Previous, SubjectKey, WindowStats};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

/// A fast hasher for the small integer subject keys (kind + id). Keys are not attacker-chosen
/// hash-flooding material in a useful way: one map entry per patient or device.
#[derive(Default)]
pub struct SubjectHasher(u64);

impl Hasher for SubjectHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

type SubjectMap<V> = HashMap<SubjectKey, V, BuildHasherDefault<SubjectHasher>>;

#[derive(Debug, Clone, Copy)]
struct Point {
    at_ms: EpochMs,
    /// Hash of the reading id: orders equal timestamps and detects duplicates.
    id: u64,
    value: f64,
}

/// Readings of every subject, trimmed to `retention_ms` behind each subject's newest reading.
#[derive(Debug, Default)]
pub struct History {
    subjects: SubjectMap<VecDeque<Point>>,
    retention_ms: Option<EpochMs>,
    len: usize,
}

/// Hashes a reading id into the key history uses to tell readings apart.
pub fn id_hash(reading_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    reading_id.hash(&mut h);
    h.finish()
}

impl History {
    /// A history that keeps `retention_ms` of readings behind each subject's newest one;
    /// `None` keeps everything (backtests).
    pub fn new(retention_ms: Option<EpochMs>) -> Self {
        History {
            subjects: SubjectMap::default(),
            retention_ms,
            len: 0,
        }
    }

    pub fn retention_ms(&self) -> Option<EpochMs> {
        self.retention_ms
    }

    /// Widens (never narrows below what rules need) the retention.
    pub fn set_retention_ms(&mut self, retention_ms: Option<EpochMs>) {
        self.retention_ms = retention_ms;
    }

    /// Number of readings held, over all subjects.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records a reading. Returns false when the same reading (same id and time) is already held.
    pub fn insert(
        &mut self,
        subject: SubjectKey,
        at_ms: EpochMs,
        reading_id: &str,
        value: f64,
    ) -> bool {
        self.insert_hashed(subject, at_ms, id_hash(reading_id), value)
    }

    pub fn insert_hashed(
        &mut self,
        subject: SubjectKey,
        at_ms: EpochMs,
        id: u64,
        value: f64,
    ) -> bool {
        let inserted = self.insert_untrimmed(subject, at_ms, id, value);
        if inserted {
            self.trim(subject);
        }
        inserted
    }

    /// Records a reading without trimming the subject's history yet: a batch inserts all of
    /// its readings this way, is evaluated, and only then [`trim`](Self::trim)s, so a batch
    /// that spans more than the retention still sees its own readings (a backfill or a
    /// replay after an outage is evaluated like a backtest).
    pub fn insert_untrimmed(
        &mut self,
        subject: SubjectKey,
        at_ms: EpochMs,
        id: u64,
        value: f64,
    ) -> bool {
        let points = self.subjects.entry(subject).or_default();
        let p = Point { at_ms, id, value };
        let inserted = match points.back() {
            Some(last) if (last.at_ms, last.id) < (at_ms, id) => {
                points.push_back(p);
                true
            }
            None => {
                points.push_back(p);
                true
            }
            Some(_) => {
                let pos = points.partition_point(|q| (q.at_ms, q.id) < (at_ms, id));
                if points
                    .get(pos)
                    .is_some_and(|q| q.at_ms == at_ms && q.id == id)
                {
                    false
                } else {
                    points.insert(pos, p);
                    true
                }
            }
        };
        if inserted {
            self.len += 1;
        }
        inserted
    }

    /// Drops the subject's readings older than the retention behind its newest one.
    pub fn trim(&mut self, subject: SubjectKey) {
        let Some(keep) = self.retention_ms else {
            return;
        };
        let Some(points) = self.subjects.get_mut(&subject) else {
            return;
        };
        if let Some(newest) = points.back().map(|q| q.at_ms) {
            let horizon = newest - keep;
            while points.front().is_some_and(|q| q.at_ms <= horizon) {
                points.pop_front();
                self.len -= 1;
            }
        }
        // A batch wider than the retention grew the deque; give the space back once trimmed
        // (to the size steady state would have), so a backlog does not stay in memory.
        if points.capacity() > 4 * points.len().max(8) {
            points.shrink_to((points.len() + 1).next_power_of_two());
        }
    }

    /// Number of subjects held.
    /// Whether any reading of `subject` is held.
    pub fn holds(&self, subject: SubjectKey) -> bool {
        self.subjects.contains_key(&subject)
    }

    pub fn subjects(&self) -> usize {
        self.subjects.len()
    }

    /// Forgets every subject whose newest reading is at or before `horizon_ms`. With
    /// `horizon_ms` = (newest event time seen) − retention this changes no window of a
    /// reading that is not later than the lateness allows: such a reading's window starts
    /// after the horizon. Bounds memory to the subjects active within the retention.
    pub fn evict_idle(&mut self, horizon_ms: EpochMs) -> usize {
        let before = self.subjects.len();
        let mut dropped = 0;
        self.subjects.retain(|_, points| {
            let keep = points.back().is_some_and(|q| q.at_ms > horizon_ms);
            if !keep {
                dropped += points.len();
            }
            keep
        });
        self.len -= dropped;
        self.subjects.shrink_to(self.subjects.len() * 2);
        before - self.subjects.len()
    }

    /// `previous` and the aggregates of every window in `durations_ms` for a reading at
    /// `at_ms`, appended to `out` in order: one map lookup and one binary search, then a walk
    /// back over the (short) windows. Same results as [`History::window`] and
    /// [`History::previous`].
    pub fn lookup(
        &self,
        subject: SubjectKey,
        at_ms: EpochMs,
        durations_ms: &[EpochMs],
        out: &mut Vec<WindowStats>,
    ) -> Option<Previous> {
        let Some(points) = self.subjects.get(&subject) else {
            out.extend(durations_ms.iter().map(|_| WindowStats::default()));
            return None;
        };
        let end = end_of(points, at_ms);
        for &d in durations_ms {
            let horizon = at_ms - d;
            // Find the window's start walking back, then sum oldest first (the documented
            // order, so means are bit-identical to `window`).
            let len = points
                .range(..end)
                .rev()
                .take_while(|q| q.at_ms > horizon)
                .count();
            out.push(stats(points.range(end - len..end).map(|q| q.value)));
        }
        let mut before = points.range(..end).rev().skip_while(|q| q.at_ms == at_ms);
        let last = before.next()?;
        let value = std::iter::once(last)
            .chain(before.take_while(|q| q.at_ms == last.at_ms))
            .map(|q| q.value)
            .fold(f64::NEG_INFINITY, f64::max);
        Some(Previous {
            value,
            at_ms: last.at_ms,
        })
    }

    /// Aggregates over (at_ms − duration_ms, at_ms] for the subject.
    pub fn window(&self, subject: SubjectKey, at_ms: EpochMs, duration_ms: EpochMs) -> WindowStats {
        let Some(points) = self.subjects.get(&subject) else {
            return WindowStats::default();
        };
        let end = points.partition_point(|q| q.at_ms <= at_ms);
        let start = points.partition_point(|q| q.at_ms <= at_ms - duration_ms);
        stats(points.range(start..end).map(|q| q.value))
    }

    /// The subject's latest reading strictly before `at_ms`; when several share that time,
    /// the largest value (so the answer never depends on arrival order).
    pub fn previous(&self, subject: SubjectKey, at_ms: EpochMs) -> Option<Previous> {
        let points = self.subjects.get(&subject)?;
        let idx = points.partition_point(|q| q.at_ms < at_ms);
        let last = points.get(idx.checked_sub(1)?)?;
        let value = points
            .range(..idx)
            .rev()
            .take_while(|q| q.at_ms == last.at_ms)
            .map(|q| q.value)
            .fold(f64::NEG_INFINITY, f64::max);
        Some(Previous {
            value,
            at_ms: last.at_ms,
        })
    }
}

/// Index just past the last point at or before `at_ms`. Lookups are nearly always for
/// recent readings, so a short walk back from the newest point beats a binary search
/// (which misses the cache on long histories); long distances fall back to the search.
fn end_of(points: &VecDeque<Point>, at_ms: EpochMs) -> usize {
    let mut end = points.len();
    for _ in 0..16 {
        match end.checked_sub(1).map(|i| points[i].at_ms) {
            Some(t) if t > at_ms => end -= 1,
            _ => return end,
        }
    }
    points.partition_point(|q| q.at_ms <= at_ms)
}

/// Count, mean, min and max of a sequence of values; all zero when it is empty.
pub fn stats(values: impl Iterator<Item = f64>) -> WindowStats {
    let (mut count, mut sum, mut min, mut max) = (0u32, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        count += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    if count == 0 {
        WindowStats::default()
    } else {
        WindowStats {
            count,
            mean: sum / f64::from(count),
            min,
            max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReadingKind;

    const P: SubjectKey = SubjectKey {
        kind: ReadingKind::Glucose,
        id: 1,
    };
    const MIN: i64 = 60_000;

    #[test]
    fn window_is_half_open_on_the_left() {
        let mut h = History::new(None);
        h.insert(P, 0, "a", 100.0);
        h.insert(P, 5 * MIN, "b", 110.0);
        h.insert(P, 10 * MIN, "c", 120.0);
        // exactly 10 minutes older is outside
        let w = h.window(P, 10 * MIN, 10 * MIN);
        assert_eq!((w.count, w.mean, w.min, w.max), (2, 115.0, 110.0, 120.0));
        // one millisecond less than 10 minutes older is inside
        let w = h.window(P, 10 * MIN - 1, 10 * MIN);
        assert_eq!(w.count, 2);
        assert_eq!(w.mean, 105.0);
    }

    #[test]
    fn equal_timestamps_see_each_other_and_duplicates_collapse() {
        let mut h = History::new(None);
        assert!(h.insert(P, MIN, "a", 100.0));
        assert!(h.insert(P, MIN, "b", 120.0));
        assert!(!h.insert(P, MIN, "a", 100.0), "same reading twice");
        assert_eq!(h.len(), 2);
        let w = h.window(P, MIN, 10 * MIN);
        assert_eq!((w.count, w.mean), (2, 110.0));
        assert_eq!(h.previous(P, MIN), None, "equal time is not previous");
        assert_eq!(
            h.previous(P, 2 * MIN),
            Some(Previous {
                value: 120.0,
                at_ms: MIN
            }),
            "ties: largest value"
        );
    }

    #[test]
    fn out_of_order_inserts_are_placed_by_event_time() {
        let mut h = History::new(None);
        for (t, id, v) in [(3, "c", 130.0), (1, "a", 110.0), (2, "b", 120.0)] {
            h.insert(P, t * MIN, id, v);
        }
        assert_eq!(
            h.previous(P, 3 * MIN),
            Some(Previous {
                value: 120.0,
                at_ms: 2 * MIN
            })
        );
        assert_eq!(
            h.window(P, 2 * MIN, 10 * MIN).count,
            2,
            "later reading not in earlier window"
        );
    }

    #[test]
    fn untrimmed_inserts_keep_a_whole_batch_until_it_is_trimmed() {
        let mut h = History::new(Some(10 * MIN));
        for i in 0..100 {
            h.insert_untrimmed(P, i * MIN, id_hash(&i.to_string()), 100.0);
        }
        assert_eq!(
            h.window(P, 5 * MIN, 10 * MIN).count,
            6,
            "early readings still see theirs"
        );
        h.trim(P);
        assert_eq!(h.len(), 10);
        assert!(
            h.subjects[&P].capacity() <= 32,
            "the batch's space is given back: capacity {}",
            h.subjects[&P].capacity()
        );
    }

    #[test]
    fn retention_trims_behind_newest() {
        let mut h = History::new(Some(10 * MIN));
        for i in 0..100 {
            h.insert(P, i * MIN, &i.to_string(), 100.0);
        }
        assert_eq!(h.len(), 10);
        assert_eq!(h.window(P, 99 * MIN, 10 * MIN).count, 10);
    }

    #[test]
    fn lookup_agrees_with_window_and_previous() {
        let mut h = History::new(None);
        let mut x = 7u64;
        for i in 0..500i64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Irregular times with ties, out of order.
            let t = ((x >> 33) % 300) as i64 * 20_000;
            h.insert(P, t, &i.to_string(), 40.0 + ((x >> 20) % 300) as f64);
        }
        let durations = [60_000, 600_000, 3_600_000];
        for t in (0..6_000_000).step_by(7_000) {
            let mut out = Vec::new();
            let prev = h.lookup(P, t, &durations, &mut out);
            assert_eq!(prev, h.previous(P, t), "previous at {t}");
            for (d, got) in durations.iter().zip(&out) {
                let want = h.window(P, t, *d);
                assert_eq!(got, &want, "window {d} at {t}");
            }
        }
        let mut out = Vec::new();
        let other = SubjectKey {
            kind: ReadingKind::Glucose,
            id: 99,
        };
        assert_eq!(h.lookup(other, 0, &durations, &mut out), None);
        assert_eq!(out, vec![WindowStats::default(); 3]);
    }

    #[test]
    fn idle_subjects_are_evicted_and_active_ones_kept_whole() {
        let q = SubjectKey {
            kind: ReadingKind::Glucose,
            id: 2,
        };
        let mut h = History::new(Some(70 * MIN));
        for i in 0..10 {
            h.insert(P, i * 5 * MIN, &format!("p{i}"), 100.0);
        }
        for i in 0..30 {
            h.insert(q, i * 5 * MIN, &format!("q{i}"), 100.0);
        }
        // Newest overall: 145 min; retention 70 min: P (newest 45 min) is idle.
        assert_eq!(h.evict_idle(145 * MIN - 70 * MIN), 1);
        assert_eq!(h.subjects(), 1);
        assert_eq!(h.window(P, 45 * MIN, 10 * MIN).count, 0);
        assert_eq!(h.window(q, 145 * MIN, 10 * MIN).count, 2);
        assert_eq!(h.len(), 14, "q keeps its 70 minutes");
    }

    #[test]
    fn subjects_are_separate() {
        let mut h = History::new(None);
        let q = SubjectKey {
            kind: ReadingKind::Glucose,
            id: 2,
        };
        h.insert(P, 0, "a", 100.0);
        h.insert(q, 0, "a", 300.0);
        assert_eq!(h.window(P, 0, MIN).mean, 100.0);
        assert_eq!(h.window(q, 0, MIN).mean, 300.0);
    }
}
