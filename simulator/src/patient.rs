//! One patient's event generator: walks event time in 15-minute telemetry blocks, produces readings at the configured
//! cadence, routes them by the device's connectivity (live, lost, or buffered and uploaded after reconnecting), and
//! releases events in emission order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::config::{Cadence, Model, Profile, SimConfig};
use crate::device::DeviceState;
use crate::event::{ConnectivityStatus, DeviceTelemetry, Event, GlucoseReading, round1};
use crate::hardware::patient_hardware;
use crate::physio::{CgmSensor, Physiology, Planner, meter_reading, prototype_value};
use crate::rng::{Purpose, rng_for, splitmix64};
use crate::scenario::{PatientScenarios, SensorPhase};
use crate::time::{DAY, HOUR, MINUTE, day_of, to_datetime};
use crate::{GLUCOSE_MAX_MG_DL, GLUCOSE_MIN_MG_DL};

/// Telemetry period.
pub(crate) const BLOCK_SECS: i64 = 15 * MINUTE;
/// CGM reading period.
pub(crate) const CGM_PERIOD_SECS: i64 = 5 * MINUTE;
/// Delay between reconnecting and uploading the readings buffered while offline.
pub(crate) const UPLOAD_DELAY_SECS: i64 = 60;

/// When readings are taken.
#[derive(Debug)]
enum ReadingClock {
    Cgm {
        rng: ChaCha8Rng,
        base: i64,
        slot: i64,
    },
    Meter {
        rng: ChaCha8Rng,
        day: i64,
        times: VecDeque<i64>,
        start: i64,
    },
}

impl ReadingClock {
    fn new(cadence: Cadence, mut rng: ChaCha8Rng, start: i64) -> ReadingClock {
        match cadence {
            Cadence::Cgm => {
                let base = start + 20 + rng.random_range(0..CGM_PERIOD_SECS);
                ReadingClock::Cgm { rng, base, slot: 0 }
            }
            Cadence::Meter => ReadingClock::Meter {
                rng,
                day: day_of(start) - 1,
                times: VecDeque::new(),
                start,
            },
        }
    }

    /// The next reading time (strictly increasing).
    fn next(&mut self) -> i64 {
        match self {
            ReadingClock::Cgm { rng, base, slot } => {
                let t = *base + *slot * CGM_PERIOD_SECS + rng.random_range(-20..=20);
                *slot += 1;
                t
            }
            ReadingClock::Meter {
                rng,
                day,
                times,
                start,
            } => loop {
                if let Some(t) = times.pop_front() {
                    return t;
                }
                *day += 1;
                // Before breakfast, before lunch, before dinner, at bedtime; each may be skipped.
                let slots = [
                    (7 * HOUR + 15 * MINUTE, 0.95),
                    (12 * HOUR + 15 * MINUTE, 0.75),
                    (18 * HOUR + 45 * MINUTE, 0.85),
                    (22 * HOUR + 30 * MINUTE, 0.6),
                ];
                for (at, chance) in slots {
                    let jitter = rng.random_range(-40 * MINUTE..=40 * MINUTE);
                    if rng.random::<f64>() < chance {
                        let t = *day * DAY + at + jitter;
                        if t >= *start {
                            times.push_back(t);
                        }
                    }
                }
            },
        }
    }
}

/// An event waiting for its emission time.
#[derive(Debug)]
struct Pending {
    emit: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.emit, self.seq) == (other.emit, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Reversed, so `BinaryHeap` pops the earliest emission first (ties in push order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.emit, other.seq).cmp(&(self.emit, self.seq))
    }
}

/// How values are produced for this patient.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per patient, built once and never moved on the hot path"
)]
enum Values {
    Physiological {
        physiology: Physiology,
        cgm: CgmSensor,
        meter_rng: ChaCha8Rng,
    },
    Prototype {
        rng: ChaCha8Rng,
    },
}

#[derive(Debug)]
pub(crate) struct PatientSim {
    patient_id: u64,
    device_id: u64,
    profile: Profile,
    cadence: Cadence,
    telemetry: bool,
    seed: u64,
    start: i64,
    end: i64,
    planner: Planner,
    values: Values,
    scenario_rng: ChaCha8Rng,
    scenarios: PatientScenarios,
    clock: ReadingClock,
    next_reading: i64,
    device: DeviceState,
    /// Telemetry phase within the 15-minute period.
    block_phase: i64,
    block_index: i64,
    block_start: i64,
    block_end: i64,
    status: ConnectivityStatus,
    backfill: Vec<GlucoseReading>,
    backfill_keep: bool,
    backfill_shuffle: bool,
    last_value: f64,
    flat_value: Option<f64>,
    glucose_seq: u64,
    device_seq: u64,
    push_seq: u64,
    pending: BinaryHeap<Pending>,
    finished: bool,
}

impl PatientSim {
    pub(crate) fn new(config: &SimConfig, patient_id: u64) -> PatientSim {
        let seed = config.seed;
        let profile = config.profile_of(patient_id).unwrap_or(Profile::Diabetic);
        let start = config.start.timestamp();
        let end = config.end().timestamp();
        let hardware = patient_hardware(seed, patient_id);
        let device = hardware.for_cadence(config.cadence);
        let rng = |purpose| rng_for(seed, patient_id, purpose);
        let values = match config.model {
            Model::Physiological => Values::Physiological {
                physiology: Physiology::new(rng(Purpose::Drift)),
                cgm: CgmSensor::new(profile, rng(Purpose::Sensor)),
                meter_rng: rng(Purpose::Meter),
            },
            Model::Prototype => Values::Prototype {
                rng: rng(Purpose::Prototype),
            },
        };
        let mut device_rng = rng(Purpose::Device);
        let block_phase = device_rng.random_range(0..BLOCK_SECS);
        let mut clock = ReadingClock::new(config.cadence, rng(Purpose::Cadence), start);
        let next_reading = clock.next();
        let mut sim = PatientSim {
            patient_id,
            device_id: device.device_id,
            profile,
            cadence: config.cadence,
            telemetry: config.telemetry,
            seed,
            start,
            end,
            planner: Planner::new(profile, rng(Purpose::Routine), rng(Purpose::Physiology)),
            values,
            scenario_rng: rng(Purpose::Scenario),
            scenarios: PatientScenarios::for_patient(&config.scenarios, patient_id, config.start),
            clock,
            next_reading,
            device: DeviceState::new(device, device_rng),
            block_phase,
            block_index: -1,
            block_start: start,
            block_end: start,
            status: ConnectivityStatus::Connected,
            backfill: Vec::new(),
            backfill_keep: false,
            backfill_shuffle: false,
            last_value: 0.0,
            flat_value: None,
            glucose_seq: 0,
            device_seq: 0,
            push_seq: 0,
            pending: BinaryHeap::new(),
            finished: start >= end,
        };
        // Before the first report the device is connected; the first report comes within 15 minutes.
        sim.block_end = sim.block_time(0).min(end);
        sim
    }

    /// Start of telemetry block `k` (k ≥ 0): a per-device phase plus a few seconds of deterministic jitter.
    fn block_time(&self, k: i64) -> i64 {
        let jitter = if k == 0 {
            0
        } else {
            (splitmix64(self.seed ^ self.device_id.rotate_left(17) ^ k as u64) % 41) as i64 - 20
        };
        self.start + self.block_phase + k * BLOCK_SECS + jitter
    }

    /// Emission time of the earliest event that can be released now, generating more as needed; `None` when done.
    pub(crate) fn peek_emit(&mut self) -> Option<i64> {
        loop {
            let watermark = self.block_start.min(self.next_reading);
            if let Some(top) = self.pending.peek()
                && (self.finished || top.emit < watermark)
            {
                return Some(top.emit);
            }
            if self.finished {
                return None;
            }
            self.advance();
        }
    }

    /// Takes the event `peek_emit` announced.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.pending.pop().map(|p| p.event)
    }

    fn push(&mut self, emit: i64, event: Event) {
        self.push_seq += 1;
        self.pending.push(Pending {
            emit,
            seq: self.push_seq,
            event,
        });
    }

    /// Generates the rest of the current block's readings and opens the next block.
    fn advance(&mut self) {
        while self.next_reading < self.block_end {
            let t = self.next_reading;
            self.next_reading = self.clock.next();
            self.reading_at(t);
        }
        let t = self.block_end;
        if t >= self.end {
            let upload = t + UPLOAD_DELAY_SECS;
            self.flush_backfill(upload);
            self.block_start = t;
            self.finished = true;
            return;
        }
        self.open_block(t);
    }

    fn open_block(&mut self, t: i64) {
        self.block_index += 1;
        let next = self.block_time(self.block_index + 1);
        let forced = self.scenarios.forced_offline(t, next);
        let report = self.device.next_block(t, forced);
        let was_offline = self.status == ConnectivityStatus::Disconnected;
        let offline = report.status == ConnectivityStatus::Disconnected;
        if was_offline && !offline {
            self.flush_backfill(t + UPLOAD_DELAY_SECS);
        }
        if offline && !was_offline {
            // A new disconnection: its readings are either buffered for upload or lost, decided once per span.
            self.backfill_keep = report.keep_backfill;
            self.backfill_shuffle = forced;
        } else if offline && forced {
            self.backfill_keep = true;
            self.backfill_shuffle = true;
        }
        self.status = report.status;
        if self.telemetry && !self.scenarios.silent(t) {
            let mut errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
            if let Some(phase) = self.scenarios.sensor_phase(t) {
                errors.push(phase.error_code().to_string());
            }
            self.device_seq += 1;
            let when = to_datetime(t);
            let event = Event::Device(DeviceTelemetry {
                reading_id: format!("d-{}-{}", self.device_id, self.device_seq),
                device_id: self.device_id,
                timestamp: when,
                battery_level: report.battery,
                firmware_version: report.firmware.to_string(),
                connectivity_status: report.status,
                error_codes: errors,
                patient_id: self.patient_id,
                emitted_at: when,
            });
            self.push(t, event);
        }
        self.block_start = t;
        self.block_end = next.min(self.end);
    }

    fn reading_at(&mut self, t: i64) {
        let value = self.value_at(t);
        let value = match self.scenarios.sensor_phase(t) {
            None => {
                self.flat_value = None;
                value
            }
            Some(SensorPhase::Flat) => *self.flat_value.get_or_insert(self.last_value),
            Some(SensorPhase::Erratic) => {
                // Jumps of 100+ mg/dL in 5 minutes: physiologically impossible.
                let high = self.scenario_rng.random::<bool>();
                let v = if high {
                    self.scenario_rng.random_range(300.0..400.0)
                } else {
                    self.scenario_rng.random_range(40.0..90.0)
                };
                round1(v)
            }
            Some(SensorPhase::Gap) => return,
        };
        self.last_value = value;
        if self.scenarios.silent(t) {
            return;
        }
        let offline = self.status == ConnectivityStatus::Disconnected;
        if offline && !self.backfill_keep {
            return;
        }
        if !offline && self.device.reading_lost() {
            return;
        }
        self.glucose_seq += 1;
        let when = to_datetime(t);
        let reading = GlucoseReading {
            reading_id: format!("g-{}-{}", self.patient_id, self.glucose_seq),
            patient_id: self.patient_id,
            device_id: self.device_id,
            glucose_level: value,
            timestamp: when,
            location: self.planner.location(t).to_string(),
            emitted_at: when,
        };
        if offline {
            self.backfill.push(reading);
        } else {
            self.push(t, Event::Glucose(reading));
        }
    }

    /// The reported glucose at `t`, rounded to one decimal.
    fn value_at(&mut self, t: i64) -> f64 {
        let v = match &mut self.values {
            Values::Physiological {
                physiology,
                cgm,
                meter_rng,
            } => {
                let g = physiology.glucose(&mut self.planner, t);
                let g = self
                    .scenarios
                    .adjust_glucose(t, g)
                    .clamp(GLUCOSE_MIN_MG_DL, GLUCOSE_MAX_MG_DL);
                match self.cadence {
                    Cadence::Cgm => cgm.read(t, g),
                    Cadence::Meter => meter_reading(meter_rng, g),
                }
            }
            Values::Prototype { rng } => {
                let hours = (t - self.start) as f64 / HOUR as f64;
                let v = prototype_value(self.profile, hours, rng);
                if self.scenarios.is_empty() {
                    v
                } else {
                    self.scenarios.adjust_glucose(t, v)
                }
            }
        };
        round1(v)
    }

    /// Uploads the readings buffered while offline, all at `upload` (after reconnecting); in random order for `late-burst`.
    fn flush_backfill(&mut self, upload: i64) {
        let mut readings = std::mem::take(&mut self.backfill);
        if self.backfill_shuffle {
            readings.shuffle(&mut self.scenario_rng);
        }
        let emitted_at = to_datetime(upload);
        for mut r in readings {
            r.emitted_at = emitted_at;
            self.push(upload, Event::Glucose(r));
        }
        self.backfill_keep = false;
        self.backfill_shuffle = false;
    }
}
