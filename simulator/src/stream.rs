//! Streaming: paces a [`Simulator`] by emission time (real time, accelerated, fixed rate or flat out) into a
//! [`Publisher`] in batches, with an optional progress bar on stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::Event;
use crate::publish::Publisher;
use crate::sim::Simulator;

/// How fast to replay emission time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// One simulated second per wall-clock second.
    Realtime,
    /// This many simulated seconds per wall-clock second (`Accelerated(60.0)`: an hour a minute).
    Accelerated(f64),
    /// No waiting.
    AsFastAsPossible,
    /// A fixed number of events (readings and telemetry) per wall-clock second, whatever their emission times.
    Rate(f64),
    /// Each event at its own emission time on the wall clock: events emitted in the past go at
    /// once (a history backfills at full speed), later ones wait for their time (then live).
    WallClock,
}

/// What a stream did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    /// Events published.
    pub events: u64,
    /// Glucose readings among them.
    pub glucose_readings: u64,
    /// Device telemetry among them.
    pub device_telemetry: u64,
    /// Events emitted after their event time (uploaded after reconnecting).
    pub late_events: u64,
    /// Calls to [`Publisher::publish`].
    pub batches: u64,
    /// Emission time of the first event.
    pub first_emitted_at: Option<DateTime<Utc>>,
    /// Emission time of the last event.
    pub last_emitted_at: Option<DateTime<Utc>>,
    /// Wall-clock time taken.
    pub elapsed: Duration,
    /// True when stopped early through the stop flag.
    pub stopped: bool,
}

impl StreamStats {
    /// Events per wall-clock second.
    pub fn events_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}

/// Streams every event of `sim` into `publisher` in batches of up to `batch_size`, pacing by emission time.
///
/// A batch is published when full, and also before any wait, so paced streams deliver each event on time. `progress`
/// draws a bar of simulated time on stderr. Returns when the simulator is exhausted or the publisher fails.
pub fn stream<P: Publisher + ?Sized>(
    sim: Simulator,
    pacing: Pacing,
    publisher: &mut P,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<StreamStats> {
    stream_until(
        sim,
        pacing,
        publisher,
        batch_size,
        progress,
        &AtomicBool::new(false),
    )
}

/// [`stream`], stopping early (after publishing and flushing what it has) once `stop` becomes true.
pub fn stream_until<P: Publisher + ?Sized>(
    sim: Simulator,
    pacing: Pacing,
    publisher: &mut P,
    batch_size: usize,
    progress: bool,
    stop: &AtomicBool,
) -> anyhow::Result<StreamStats> {
    match pacing {
        Pacing::Accelerated(f) | Pacing::Rate(f) if !(f.is_finite() && f > 0.0) => {
            bail!("pacing factor must be a positive number, got {f}")
        }
        _ => {}
    }
    let batch_size = batch_size.max(1);
    let start = sim.config().start;
    let total_secs = sim.config().duration.num_seconds().max(1) as u64;
    let bar = progress.then(|| {
        let bar = ProgressBar::with_draw_target(Some(total_secs), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {percent:>3}% simulated  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });

    let wall_start = Instant::now();
    let wall_start_utc = Utc::now();
    let mut stats = StreamStats::default();
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let mut publish = |batch: &mut Vec<Event>, stats: &mut StreamStats| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        publisher.publish(batch)?;
        stats.batches += 1;
        if let Some(bar) = &bar {
            let last = batch[batch.len() - 1].emitted_at();
            bar.set_position(((last - start).num_seconds().max(0) as u64).min(total_secs));
            bar.set_message(format!("{} events", stats.events));
        }
        batch.clear();
        Ok(())
    };

    for event in sim {
        if stop.load(Ordering::Relaxed) {
            stats.stopped = true;
            break;
        }
        let due = match pacing {
            Pacing::AsFastAsPossible => None,
            Pacing::Realtime => Some(offset_secs(event.emitted_at(), start)),
            Pacing::Accelerated(f) => Some(offset_secs(event.emitted_at(), start) / f),
            Pacing::Rate(r) => Some(stats.events as f64 / r),
            Pacing::WallClock => Some(offset_secs(event.emitted_at(), wall_start_utc)),
        };
        if let Some(due) = due {
            let wait = Duration::from_secs_f64(due.max(0.0)).saturating_sub(wall_start.elapsed());
            if !wait.is_zero() {
                publish(&mut batch, &mut stats)?;
                if !sleep_unless_stopped(wait, stop) {
                    stats.stopped = true;
                    break;
                }
            }
        }
        stats.events += 1;
        match &event {
            Event::Glucose(_) => stats.glucose_readings += 1,
            Event::Device(_) => stats.device_telemetry += 1,
        }
        stats.late_events += event.is_late() as u64;
        stats.first_emitted_at.get_or_insert(event.emitted_at());
        stats.last_emitted_at = Some(event.emitted_at());
        batch.push(event);
        if batch.len() >= batch_size {
            publish(&mut batch, &mut stats)?;
        }
    }
    publish(&mut batch, &mut stats)?;
    publisher.flush()?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    stats.elapsed = wall_start.elapsed();
    Ok(stats)
}

fn offset_secs(t: DateTime<Utc>, start: DateTime<Utc>) -> f64 {
    (t - start).num_milliseconds() as f64 / 1000.0
}

/// Sleeps in short slices so a stop request is noticed quickly; false when stopped.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
