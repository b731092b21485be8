//! The device catalogue (fictional manufacturers, models, firmware lines) and which device each patient wears; shared by
//! the simulator and the dimension data so both name the same device ids, models and firmware.

use rand::Rng;

use crate::config::Cadence;
use crate::rng::{Purpose, rng_for};

/// Offset of CGM device ids: patient `p` wears CGM `100_000 + p`.
pub(crate) const CGM_ID_BASE: u64 = 100_000;
/// Offset of meter device ids: patient `p` owns meter `200_000 + p`.
pub(crate) const METER_ID_BASE: u64 = 200_000;

/// The CGM a patient wears.
pub fn cgm_device_id(patient_id: u64) -> u64 {
    CGM_ID_BASE + patient_id
}

/// The blood glucose meter a patient owns.
pub fn meter_device_id(patient_id: u64) -> u64 {
    METER_ID_BASE + patient_id
}

/// The device whose readings and telemetry a patient produces under `cadence`.
pub fn device_id_for(patient_id: u64, cadence: Cadence) -> u64 {
    match cadence {
        Cadence::Cgm => cgm_device_id(patient_id),
        Cadence::Meter => meter_device_id(patient_id),
    }
}

#[derive(Debug)]
pub(crate) struct ManufacturerSpec {
    pub id: u64,
    pub name: &'static str,
    pub country: &'static str,
}

#[derive(Debug)]
pub(crate) struct ModelSpec {
    pub id: u64,
    pub manufacturer_id: u64,
    pub name: &'static str,
    pub kind: Cadence,
    /// Oldest first; devices start on any but may only upgrade forwards.
    pub firmware: &'static [&'static str],
    /// Battery drain per 15 minutes, percent.
    pub drain_per_block: f64,
}

pub(crate) const MANUFACTURERS: &[ManufacturerSpec] = &[
    ManufacturerSpec {
        id: 1,
        name: "Lumen Diagnostics",
        country: "SE",
    },
    ManufacturerSpec {
        id: 2,
        name: "Helix Medical Devices",
        country: "US",
    },
    ManufacturerSpec {
        id: 3,
        name: "Sakura Sensing",
        country: "JP",
    },
];

pub(crate) const MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: 1,
        manufacturer_id: 1,
        name: "Lumen CGM One",
        kind: Cadence::Cgm,
        firmware: &["1.4.2", "1.5.0", "1.6.1"],
        drain_per_block: 0.35,
    },
    ModelSpec {
        id: 2,
        manufacturer_id: 1,
        name: "Lumen CGM Two",
        kind: Cadence::Cgm,
        firmware: &["2.0.3", "2.1.0"],
        drain_per_block: 0.28,
    },
    ModelSpec {
        id: 3,
        manufacturer_id: 2,
        name: "Helix Sense 5",
        kind: Cadence::Cgm,
        firmware: &["5.2.0", "5.3.1", "5.4.0"],
        drain_per_block: 0.40,
    },
    ModelSpec {
        id: 4,
        manufacturer_id: 3,
        name: "Sakura Glow",
        kind: Cadence::Cgm,
        firmware: &["3.0.1", "3.1.4"],
        drain_per_block: 0.32,
    },
    ModelSpec {
        id: 5,
        manufacturer_id: 2,
        name: "Helix Check",
        kind: Cadence::Meter,
        firmware: &["1.0.9", "1.1.2"],
        drain_per_block: 0.05,
    },
    ModelSpec {
        id: 6,
        manufacturer_id: 3,
        name: "Sakura Drop",
        kind: Cadence::Meter,
        firmware: &["4.2.0", "4.3.0", "4.3.5"],
        drain_per_block: 0.06,
    },
];

/// One device as assigned to a patient.
#[derive(Debug, Clone)]
pub(crate) struct DeviceAssignment {
    pub device_id: u64,
    pub model_index: usize,
    pub firmware_index: usize,
    pub serial: String,
}

impl DeviceAssignment {
    pub(crate) fn model(&self) -> &'static ModelSpec {
        &MODELS[self.model_index]
    }
}

/// A patient's CGM and meter.
#[derive(Debug, Clone)]
pub(crate) struct PatientHardware {
    pub cgm: DeviceAssignment,
    pub meter: DeviceAssignment,
}

impl PatientHardware {
    pub(crate) fn for_cadence(&self, cadence: Cadence) -> &DeviceAssignment {
        match cadence {
            Cadence::Cgm => &self.cgm,
            Cadence::Meter => &self.meter,
        }
    }
}

/// Deterministic device assignment for a patient; the dimension data and the simulator both call this.
pub(crate) fn patient_hardware(seed: u64, patient_id: u64) -> PatientHardware {
    let mut rng = rng_for(seed, patient_id, Purpose::Hardware);
    let mut pick = |kind: Cadence, device_id: u64| {
        let candidates: Vec<usize> = (0..MODELS.len())
            .filter(|&i| MODELS[i].kind == kind)
            .collect();
        let model_index = candidates[rng.random_range(0..candidates.len())];
        let model = &MODELS[model_index];
        // Most devices run the newest or the one before; a few lag further behind.
        let n = model.firmware.len();
        let back = match rng.random_range(0..10) {
            0..=4 => 0,
            5..=8 => 1,
            _ => 2,
        };
        let firmware_index = n - 1 - back.min(n - 1);
        let maker = &MANUFACTURERS[(model.manufacturer_id - 1) as usize];
        let prefix: String = maker
            .name
            .chars()
            .filter(|c| c.is_ascii_uppercase())
            .take(2)
            .collect();
        let serial = format!("{prefix}{}-{:08X}", model.id, rng.random::<u32>());
        DeviceAssignment {
            device_id,
            model_index,
            firmware_index,
            serial,
        }
    };
    let cgm = pick(Cadence::Cgm, cgm_device_id(patient_id));
    let meter = pick(Cadence::Meter, meter_device_id(patient_id));
    PatientHardware { cgm, meter }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        for (i, m) in MODELS.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
            assert!(MANUFACTURERS.iter().any(|f| f.id == m.manufacturer_id));
            assert!(!m.firmware.is_empty());
        }
    }

    #[test]
    fn assignment_is_deterministic_and_kind_correct() {
        let a = patient_hardware(1, 7);
        let b = patient_hardware(1, 7);
        assert_eq!(a.cgm.serial, b.cgm.serial);
        assert_eq!(a.cgm.device_id, 100_007);
        assert_eq!(a.meter.device_id, 200_007);
        assert_eq!(a.cgm.model().kind, Cadence::Cgm);
        assert_eq!(a.meter.model().kind, Cadence::Meter);
        assert!(a.cgm.firmware_index < a.cgm.model().firmware.len());
    }
}
