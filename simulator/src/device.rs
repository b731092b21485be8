//! Device state behind the telemetry: battery drain and recharge, firmware upgrades, connectivity as a Markov chain over
//! 15-minute reporting blocks, reading loss, and error codes.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::event::ConnectivityStatus;
use crate::hardware::{DeviceAssignment, ModelSpec};
use crate::time::{HOUR, MINUTE, hour_of_day, second_of_day};

/// Battery below this raises `E101`.
pub(crate) const LOW_BATTERY: f64 = 15.0;
/// Chance per day (at 03:00) that a device not on its model's newest firmware tries to upgrade.
const UPGRADE_CHANCE: f64 = 0.03;
/// Chance that an upgrade fails (`E401`) and the device stays on its firmware.
const UPGRADE_FAILURE: f64 = 0.15;
/// Chance that readings taken during a natural disconnection are kept and uploaded after reconnecting.
const BACKFILL_CHANCE: f64 = 0.6;

/// What a device reports for one block, and how readings in that block travel.
#[derive(Debug, Clone)]
pub(crate) struct BlockReport {
    pub status: ConnectivityStatus,
    pub battery: f64,
    pub firmware: &'static str,
    pub errors: Vec<&'static str>,
    /// The block starts a disconnection whose readings will be uploaded after reconnecting.
    pub keep_backfill: bool,
}

#[derive(Debug)]
pub(crate) struct DeviceState {
    rng: ChaCha8Rng,
    model: &'static ModelSpec,
    firmware_index: usize,
    battery: f64,
    charging: bool,
    status: ConnectivityStatus,
}

impl DeviceState {
    pub(crate) fn new(device: &DeviceAssignment, mut rng: ChaCha8Rng) -> DeviceState {
        let battery = rng.random_range(40.0..100.0);
        DeviceState {
            rng,
            model: device.model(),
            firmware_index: device.firmware_index,
            battery,
            charging: false,
            status: ConnectivityStatus::Connected,
        }
    }

    /// Advances to the block starting at `t`. `forced_offline` holds the link down (the `late-burst` scenario).
    pub(crate) fn next_block(&mut self, t: i64, forced_offline: bool) -> BlockReport {
        let r = &mut self.rng;
        let mut errors = Vec::new();

        // Battery: drain (faster while searching for a link), recharge in the evening/night or when nearly empty.
        if self.charging {
            self.battery += r.random_range(6.0..10.0);
            if self.battery >= 100.0 {
                self.battery = 100.0;
                self.charging = false;
            }
        } else {
            let searching = if self.status == ConnectivityStatus::Connected {
                1.0
            } else {
                1.3
            };
            self.battery = (self.battery
                - self.model.drain_per_block * r.random_range(0.8..1.2) * searching)
                .max(0.0);
            let h = hour_of_day(t);
            let evening = !(7.0..21.0).contains(&h);
            let plug_in = (self.battery < 25.0 && evening && r.random::<f64>() < 0.5)
                || (self.battery < 10.0 && r.random::<f64>() < 0.5)
                || self.battery < 3.0;
            if plug_in {
                self.charging = true;
            }
        }

        // Firmware: an occasional nightly upgrade to the next version; the device reboots (offline for the block).
        let mut upgrading = false;
        let sod = second_of_day(t);
        if (3 * HOUR..3 * HOUR + 15 * MINUTE).contains(&sod)
            && self.firmware_index + 1 < self.model.firmware.len()
            && r.random::<f64>() < UPGRADE_CHANCE
        {
            if r.random::<f64>() < UPGRADE_FAILURE {
                errors.push("E401");
            } else {
                self.firmware_index += 1;
                upgrading = true;
            }
        }

        // Connectivity: a three-state Markov chain per 15-minute block.
        let was = self.status;
        self.status = if forced_offline || upgrading {
            ConnectivityStatus::Disconnected
        } else {
            let u: f64 = r.random();
            use ConnectivityStatus::*;
            match was {
                Connected if u < 0.006 => Disconnected,
                Connected if u < 0.026 => PoorConnection,
                Connected => Connected,
                PoorConnection if u < 0.08 => Disconnected,
                PoorConnection if u < 0.53 => Connected,
                PoorConnection => PoorConnection,
                Disconnected if u < 0.40 => Connected,
                Disconnected if u < 0.55 => PoorConnection,
                Disconnected => Disconnected,
            }
        };
        let keep_backfill = self.status == ConnectivityStatus::Disconnected
            && (forced_offline
                || upgrading
                || (was != ConnectivityStatus::Disconnected
                    && r.random::<f64>() < BACKFILL_CHANCE));

        if self.battery < LOW_BATTERY {
            errors.push("E101");
        }
        if r.random::<f64>() < 0.002 {
            errors.push("E301");
        }
        if r.random::<f64>() < 0.001 {
            errors.push("E501");
        }
        BlockReport {
            status: self.status,
            battery: crate::event::round1(self.battery),
            firmware: self.model.firmware[self.firmware_index],
            errors,
            keep_backfill,
        }
    }

    /// Whether a reading taken now is lost on the way (never for `Disconnected`, which buffers or drops whole spans).
    pub(crate) fn reading_lost(&mut self) -> bool {
        let p = match self.status {
            ConnectivityStatus::Connected => 0.004,
            ConnectivityStatus::PoorConnection => 0.25,
            ConnectivityStatus::Disconnected => 0.0,
        };
        self.rng.random::<f64>() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::patient_hardware;
    use crate::rng::{Purpose, rng_for};
    use crate::time::DAY;

    #[test]
    fn mostly_connected_battery_cycles_and_forced_offline_holds() {
        let hw = patient_hardware(1, 1);
        let mut dev = DeviceState::new(&hw.cgm, rng_for(1, 1, Purpose::Device));
        let t0 = 20_458 * DAY;
        let blocks = 14 * 96;
        let mut connected = 0;
        let mut min_battery = f64::MAX;
        let mut recharged = false;
        let mut last = None;
        for k in 0..blocks {
            let rep = dev.next_block(t0 + k * 900, false);
            connected += (rep.status == ConnectivityStatus::Connected) as i32;
            min_battery = min_battery.min(rep.battery);
            if let Some(prev) = last
                && rep.battery > prev
            {
                recharged = true;
            }
            last = Some(rep.battery);
            assert!((0.0..=100.0).contains(&rep.battery));
        }
        assert!(connected as f64 / blocks as f64 > 0.85, "{connected}");
        assert!(recharged);
        assert!(min_battery < 60.0);
        for k in 0..4 {
            let rep = dev.next_block(t0 + (blocks + k) * 900, true);
            assert_eq!(rep.status, ConnectivityStatus::Disconnected);
            assert!(rep.keep_backfill);
        }
    }
}
