//! Reading cadence: CGM every 5 minutes with jitter, a few fingersticks a day on a meter, and the dropout rate.

use glucoguard_simulator::{Cadence, SimConfig};

use crate::common::{by_event_time, config, glucose_of, median, run};

#[test]
fn cgm_every_five_minutes_with_small_jitter() {
    let events = run(config(5, 3, 1));
    for p in 1..=5 {
        let r = by_event_time(glucose_of(&events, p));
        let gaps: Vec<i64> = r
            .windows(2)
            .map(|w| (w[1].timestamp - w[0].timestamp).num_seconds())
            .collect();
        let m = median(gaps.clone());
        assert!((280..=320).contains(&m), "patient {p}: median gap {m}");
        assert!(gaps.iter().all(|&g| g >= 250), "readings closer than 250 s");
        // Jitter: not every gap is exactly 300 s.
        assert!(gaps.iter().any(|&g| g != 300));
    }
}

#[test]
fn meter_a_few_fingersticks_a_day() {
    let cfg = SimConfig {
        cadence: Cadence::Meter,
        ..config(10, 14, 2)
    };
    let events = run(cfg);
    for p in 1..=10 {
        let r = glucose_of(&events, p);
        let per_day = r.len() as f64 / 14.0;
        assert!((2.0..=5.0).contains(&per_day), "patient {p}: {per_day}/day");
        assert!(r.iter().all(|x| x.device_id == 200_000 + p));
        let gaps: Vec<i64> = by_event_time(r)
            .windows(2)
            .map(|w| (w[1].timestamp - w[0].timestamp).num_seconds())
            .collect();
        assert!(median(gaps) > 3 * 3600);
    }
}

#[test]
fn dropout_rate_is_small_but_real() {
    let cfg = config(20, 14, 3);
    let expected_slots = (cfg.duration.num_seconds() / 300) as f64;
    let events = run(cfg);
    let mut rates = Vec::new();
    for p in 1..=20 {
        let got = glucose_of(&events, p).len() as f64;
        rates.push(1.0 - got / expected_slots);
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    // Real CGM data capture is typically 90–98 %.
    assert!((0.005..=0.08).contains(&mean), "mean dropout {mean}");
    assert!(rates.iter().all(|&r| (0.0..0.2).contains(&r)), "{rates:?}");
    // And some gaps are longer than a reading or two (signal loss, not only single misses).
    let long_gaps = (1..=20)
        .flat_map(|p| {
            let r = by_event_time(glucose_of(&events, p));
            r.windows(2)
                .map(|w| (w[1].timestamp - w[0].timestamp).num_seconds())
                .collect::<Vec<_>>()
        })
        .filter(|&g| g > 20 * 60)
        .count();
    assert!(long_gaps > 0);
}
