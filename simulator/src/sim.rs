//! The [`Simulator`]: merges every patient's event stream into one iterator in non-decreasing emission time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::config::SimConfig;
use crate::event::Event;
use crate::patient::PatientSim;

/// A deterministic stream of glucose readings and device telemetry for all patients of a [`SimConfig`], in
/// non-decreasing emission time (ties broken by patient id, then by the patient's own order).
///
/// Generation is lazy and needs memory proportional to the number of patients, not to the duration.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    patients: Vec<PatientSim>,
    /// (emission time, patient index) of each patient's next releasable event.
    heads: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Simulator {
    /// Builds the simulator. Scenarios aimed at patients outside `1..=patients` have no effect
    /// (use [`SimConfig::validate`] to reject them).
    pub fn new(config: SimConfig) -> Simulator {
        let mut patients: Vec<PatientSim> = config
            .patient_ids()
            .map(|id| PatientSim::new(&config, id))
            .collect();
        let heads = patients
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.peek_emit().map(|e| Reverse((e, i))))
            .collect();
        Simulator {
            config,
            patients,
            heads,
        }
    }

    /// The configuration this simulator runs.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }
}

impl Iterator for Simulator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let Reverse((_, i)) = self.heads.pop()?;
        let patient = &mut self.patients[i];
        let event = patient.pop();
        if let Some(emit) = patient.peek_emit() {
            self.heads.push(Reverse((emit, i)));
        }
        event
    }
}
