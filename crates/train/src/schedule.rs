//! Learning rate per step: linear warm-up, then constant, cosine, or warm-up-stable-decay.

use crate::settings::{Schedule, TrainSettings};

/// The learning rate at optimizer step `step` (0-based) of `total`.
pub fn learning_rate(t: &TrainSettings, step: u64, total: u64) -> f64 {
    let peak = t.lr;
    let floor = peak * t.min_lr_ratio;
    if step < t.warmup_steps {
        return peak * (step + 1) as f64 / t.warmup_steps as f64;
    }
    let after = (total.saturating_sub(t.warmup_steps)).max(1) as f64;
    let progress = ((step - t.warmup_steps) as f64 / after).min(1.0);
    match t.schedule {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        Schedule::Wsd => {
            let decay_start = 1.0 - t.decay_fraction;
            if progress < decay_start || t.decay_fraction == 0.0 {
                peak
            } else {
                peak - (peak - floor) * (progress - decay_start) / t.decay_fraction
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schedule: Schedule) -> TrainSettings {
        TrainSettings {
            lr: 1.0,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            decay_fraction: 0.5,
            schedule,
            ..TrainSettings::default()
        }
    }

    /// Asserts that the rate at `step` of 110 steps is `want`, to rounding.
    fn assert_lr(t: &TrainSettings, step: u64, want: f64) {
        let lr = learning_rate(t, step, 110);
        assert!((lr - want).abs() < 1e-12, "step {step}: {lr}, not {want}");
    }

    #[test]
    fn warmup_rises_linearly_to_the_peak() {
        let t = settings(Schedule::Constant);
        assert_lr(&t, 0, 0.1);
        assert_lr(&t, 4, 0.5);
        assert_lr(&t, 9, 1.0);
        assert_eq!(learning_rate(&t, 100, 110), 1.0);
    }

    #[test]
    fn cosine_ends_at_the_floor_and_halves_in_the_middle() {
        let t = settings(Schedule::Cosine);
        assert_lr(&t, 10, 1.0);
        assert_lr(&t, 60, 0.55);
        assert_lr(&t, 110, 0.1);
    }

    #[test]
    fn wsd_is_stable_then_decays_linearly() {
        let t = settings(Schedule::Wsd);
        assert_eq!(learning_rate(&t, 50, 110), 1.0);
        assert_lr(&t, 85, 0.55);
        assert_lr(&t, 110, 0.1);
    }
}
