//! The prototype model: value = scale · (sin(2π · 0.25 · h) + N(0, 0.3)) + offset, h in hours since the start.

use glucoguard_simulator::{Model, Profile, SimConfig};

use crate::common::{config, glucose_of, run};

#[test]
fn formula_per_profile() {
    for (i, profile) in Profile::ALL.into_iter().enumerate() {
        let cfg = SimConfig {
            model: Model::Prototype,
            profiles: Some(vec![profile]),
            ..config(1, 14, 100 + i as u64)
        };
        let start = cfg.start;
        let events = run(cfg);
        let readings = glucose_of(&events, 1);
        assert!(readings.len() > 3800, "{profile}: {}", readings.len());
        let (scale, offset) = profile.prototype_scale_offset();

        // Least squares of value on [1, sin(2π·0.25·h)].
        let xs: Vec<f64> = readings
            .iter()
            .map(|r| {
                let h = (r.timestamp - start).num_seconds() as f64 / 3600.0;
                (2.0 * std::f64::consts::PI * 0.25 * h).sin()
            })
            .collect();
        let ys: Vec<f64> = readings.iter().map(|r| r.glucose_level).collect();
        let n = xs.len() as f64;
        let mx = xs.iter().sum::<f64>() / n;
        let my = ys.iter().sum::<f64>() / n;
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let amplitude = sxy / sxx;
        let intercept = my - amplitude * mx;
        let residual_sd = (xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (y - intercept - amplitude * x).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();

        assert!(
            (my - offset).abs() < 0.03 * scale,
            "{profile}: mean {my} vs offset {offset}"
        );
        assert!(
            (intercept - offset).abs() < 0.03 * scale,
            "{profile}: intercept {intercept}"
        );
        assert!(
            (amplitude - scale).abs() < 0.04 * scale,
            "{profile}: amplitude {amplitude} vs {scale}"
        );
        assert!(
            (residual_sd - 0.3 * scale).abs() < 0.06 * 0.3 * scale,
            "{profile}: noise sd {residual_sd} vs {}",
            0.3 * scale
        );
    }
}

#[test]
fn value_moves_along_time_not_frozen_at_the_first_point() {
    let cfg = SimConfig {
        model: Model::Prototype,
        profiles: Some(vec![Profile::Diabetic]),
        ..config(1, 1, 1)
    };
    let start = cfg.start;
    let events = run(cfg);
    let r = glucose_of(&events, 1);
    let near = |hours: f64| {
        let vals: Vec<f64> = r
            .iter()
            .filter(|x| ((x.timestamp - start).num_seconds() as f64 / 3600.0 - hours).abs() < 0.35)
            .map(|x| x.glucose_level)
            .collect();
        vals.iter().sum::<f64>() / vals.len() as f64
    };
    // Peaks at h = 1, 5, 9…, troughs at h = 3, 7, 11…
    assert!(
        near(5.0) - near(7.0) > 50.0,
        "peak {} trough {}",
        near(5.0),
        near(7.0)
    );
}
