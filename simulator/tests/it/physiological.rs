//! The physiological model: 14-day statistics per profile inside published ranges, clamping, daily patterns.

use glucoguard_simulator::stats::{ReferenceRange, glucose_stats};
use glucoguard_simulator::{Profile, SimConfig};

use crate::common::{config, glucose_of, run};

/// Six patients per profile, 14 days, two seeds: pooled statistics in the reference band, and every patient's mean too.
#[test]
fn fourteen_day_statistics_match_published_ranges() {
    for seed in [2026, 7] {
        let events = run(config(30, 14, seed));
        let cfg = config(30, 14, seed);
        for profile in Profile::ALL {
            let range = ReferenceRange::for_profile(profile);
            let patients: Vec<u64> = cfg
                .patient_ids()
                .filter(|&p| cfg.profile_of(p) == Some(profile))
                .collect();
            assert_eq!(patients.len(), 6);
            let mut pooled = Vec::new();
            for &p in &patients {
                let values: Vec<f64> = glucose_of(&events, p)
                    .iter()
                    .map(|r| r.glucose_level)
                    .collect();
                let s = glucose_stats(values.iter().copied());
                assert!(
                    (range.mean.0..=range.mean.1).contains(&s.mean),
                    "seed {seed} {profile} patient {p}: mean {:.1} outside {:?}",
                    s.mean,
                    range.mean
                );
                pooled.extend(values);
            }
            let s = glucose_stats(pooled);
            let bad = range.violations(&s);
            assert!(bad.is_empty(), "seed {seed} {profile}: {bad:?} ({s:?})");
        }
    }
}

#[test]
fn values_are_clamped_and_have_one_decimal() {
    let events = run(config(10, 7, 4));
    for r in events.iter().filter_map(|e| e.as_glucose()) {
        assert!((40.0..=400.0).contains(&r.glucose_level), "{r:?}");
        assert!(
            ((r.glucose_level * 10.0).round() - r.glucose_level * 10.0).abs() < 1e-6,
            "{r:?}"
        );
    }
}

fn mean_between(
    events: &[glucoguard_simulator::Event],
    patients: &[u64],
    from_h: u32,
    to_h: u32,
) -> f64 {
    use chrono::Timelike;
    let v: Vec<f64> = patients
        .iter()
        .flat_map(|&p| glucose_of(events, p))
        .filter(|r| (from_h..to_h).contains(&r.timestamp.hour()))
        .map(|r| r.glucose_level)
        .collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn daily_patterns_meals_dawn_and_nocturnal_lows() {
    let cfg = SimConfig {
        profiles: Some(vec![Profile::Diabetic]),
        ..config(8, 14, 31)
    };
    let diabetic = run(cfg);
    let all: Vec<u64> = (1..=8).collect();
    // Post-lunch excursion and dawn phenomenon.
    assert!(mean_between(&diabetic, &all, 13, 15) > mean_between(&diabetic, &all, 11, 12) + 15.0);
    assert!(mean_between(&diabetic, &all, 6, 8) > mean_between(&diabetic, &all, 2, 4) + 5.0);

    // Low-glucose patients spend more of the night than the day below 70.
    let cfg = SimConfig {
        profiles: Some(vec![Profile::LowGlucose]),
        ..config(8, 14, 31)
    };
    let low = run(cfg);
    use chrono::Timelike;
    let share_below = |night: bool| {
        let v: Vec<f64> = all
            .iter()
            .flat_map(|&p| glucose_of(&low, p))
            .filter(|r| (r.timestamp.hour() < 6) == night)
            .map(|r| r.glucose_level)
            .collect();
        v.iter().filter(|&&x| x < 70.0).count() as f64 / v.len() as f64
    };
    assert!(
        share_below(true) > share_below(false) * 1.3,
        "night {} day {}",
        share_below(true),
        share_below(false)
    );

    // Athletes dip while exercising: glucose at the gym is lower than their overall mean.
    let cfg = SimConfig {
        profiles: Some(vec![Profile::Athlete]),
        ..config(8, 14, 31)
    };
    let athletes = run(cfg);
    let readings: Vec<_> = all.iter().flat_map(|&p| glucose_of(&athletes, p)).collect();
    let mean = readings.iter().map(|r| r.glucose_level).sum::<f64>() / readings.len() as f64;
    let gym: Vec<f64> = readings
        .iter()
        .filter(|r| r.location == "gym")
        .map(|r| r.glucose_level)
        .collect();
    assert!(gym.len() > 100);
    let gym_mean = gym.iter().sum::<f64>() / gym.len() as f64;
    assert!(gym_mean < mean - 3.0, "gym {gym_mean} overall {mean}");
}

#[test]
fn party_goers_go_out_at_weekend_nights_and_sensor_noise_is_autocorrelated() {
    use chrono::{Datelike, Timelike};
    let cfg = SimConfig {
        profiles: Some(vec![Profile::PartyGoer]),
        ..config(4, 14, 8)
    };
    let events = run(cfg);
    let out_late: usize = (1..=4)
        .flat_map(|p| glucose_of(&events, p))
        .filter(|r| r.location == "out" && (r.timestamp.hour() >= 23 || r.timestamp.hour() < 2))
        .filter(|r| {
            matches!(
                r.timestamp.weekday(),
                chrono::Weekday::Fri | chrono::Weekday::Sat | chrono::Weekday::Sun
            )
        })
        .count();
    assert!(out_late > 50, "{out_late}");

    // Consecutive 5-minute differences are much smaller than the spread: the series is smooth, not white noise.
    let r = glucose_of(&events, 1);
    let diffs: Vec<f64> = r
        .windows(2)
        .map(|w| w[1].glucose_level - w[0].glucose_level)
        .collect();
    let diff_sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
    let s = glucose_stats(r.iter().map(|x| x.glucose_level));
    assert!(diff_sd < 0.35 * s.sd, "step sd {diff_sd} vs sd {}", s.sd);
}
