//! Per-reading access to the flat list of window aggregates the host passes.

use crate::WindowStats;

/// The window aggregates of one `evaluate` call.
///
/// The host passes them flat: the stats of reading `i` for window `w` sit at
/// `i * window_count + w`, windows in declaration order. [`Windows::get`]
/// hides that arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Windows<'a> {
    stats: &'a [WindowStats],
    window_count: usize,
}

impl<'a> Windows<'a> {
    /// Wrap the flat list; errors unless it holds exactly
    /// `reading_count * window_count` entries.
    pub fn new(
        stats: &'a [WindowStats],
        window_count: usize,
        reading_count: usize,
    ) -> Result<Self, String> {
        let expected = reading_count.checked_mul(window_count);
        if expected != Some(stats.len()) {
            return Err(format!(
                "the host passed {} window stats for {reading_count} reading(s) and {window_count} declared window(s)",
                stats.len()
            ));
        }
        Ok(Self {
            stats,
            window_count,
        })
    }

    /// The stats of window `window_index` (declaration order) for reading
    /// `reading_index` of the batch.
    ///
    /// # Panics
    /// When either index is out of range, like slice indexing.
    pub fn get(&self, reading_index: usize, window_index: usize) -> &'a WindowStats {
        assert!(
            window_index < self.window_count,
            "window index {window_index} out of range: the rule declares {} window(s)",
            self.window_count
        );
        &self.stats[reading_index * self.window_count + window_index]
    }

    /// All window stats of reading `reading_index`, in declaration order.
    pub fn of_reading(&self, reading_index: usize) -> &'a [WindowStats] {
        let start = reading_index * self.window_count;
        &self.stats[start..start + self.window_count]
    }

    /// How many windows the rule declared.
    pub fn window_count(&self) -> usize {
        self.window_count
    }

    /// The flat list as the host passed it.
    pub fn as_flat(&self) -> &'a [WindowStats] {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(mean: f64) -> WindowStats {
        WindowStats {
            count: 1,
            mean,
            min: mean,
            max: mean,
        }
    }

    #[test]
    fn indexes_reading_major() {
        let flat = [
            stats(0.0),
            stats(1.0),
            stats(10.0),
            stats(11.0),
            stats(20.0),
            stats(21.0),
        ];
        let windows = Windows::new(&flat, 2, 3).unwrap();
        assert_eq!(windows.get(0, 1).mean, 1.0);
        assert_eq!(windows.get(1, 0).mean, 10.0);
        assert_eq!(windows.get(2, 1).mean, 21.0);
        assert_eq!(windows.of_reading(1).len(), 2);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let flat = [stats(0.0), stats(1.0), stats(10.0)];
        assert!(Windows::new(&flat, 2, 2).is_err());
        assert!(Windows::new(&[], 0, 5).is_ok());
    }

    #[test]
    #[should_panic(expected = "window index 2 out of range")]
    fn window_index_out_of_range_panics() {
        let flat = [stats(0.0), stats(1.0)];
        Windows::new(&flat, 2, 1).unwrap().get(0, 2);
    }
}
