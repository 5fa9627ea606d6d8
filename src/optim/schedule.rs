//! Learning-rate schedules: linear warmup, then constant, linear or
//! exponential decay (optionally staircase), as DALL·E mini's trainer offers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    #[default]
    Constant,
    Linear,
    Exponential,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub decay: Decay,
    /// Linear: steps from the end of warmup to zero. Exponential: steps per decay period.
    #[serde(default = "default_transition")]
    pub transition_steps: u64,
    /// Exponential: factor per `transition_steps`.
    #[serde(default = "default_rate")]
    pub decay_rate: f64,
    /// Exponential: decay in whole periods.
    #[serde(default)]
    pub staircase: bool,
}

fn default_transition() -> u64 {
    1000
}
fn default_rate() -> f64 {
    0.5
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { warmup_steps: 0, decay: Decay::Constant, transition_steps: 1000, decay_rate: 0.5, staircase: false }
    }
}

impl Schedule {
    /// Learning rate of update `step` (0-based) for peak rate `peak`.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let t = (step - self.warmup_steps) as f64;
        let n = self.transition_steps.max(1) as f64;
        match self.decay {
            Decay::Constant => peak,
            Decay::Linear => peak * (1.0 - t / n).max(0.0),
            Decay::Exponential => {
                let periods = if self.staircase { (t / n).floor() } else { t / n };
                peak * self.decay_rate.powf(periods)
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.transition_steps == 0 {
            return Err("optimizer.schedule.transition_steps must be at least 1".into());
        }
        if !(self.decay_rate > 0.0 && self.decay_rate.is_finite()) {
            return Err(format!("optimizer.schedule.decay_rate must be positive, got {}", self.decay_rate));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decays() {
        let s = Schedule { warmup_steps: 4, decay: Decay::Linear, transition_steps: 10, ..Default::default() };
        assert_eq!(s.lr(1.0, 0), 0.25);
        assert_eq!(s.lr(1.0, 3), 1.0);
        assert_eq!(s.lr(1.0, 4), 1.0);
        assert!((s.lr(1.0, 9) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(1.0, 100), 0.0);
        let e = Schedule { decay: Decay::Exponential, transition_steps: 10, decay_rate: 0.5, staircase: true, ..Default::default() };
        assert_eq!(e.lr(2.0, 9), 2.0);
        assert_eq!(e.lr(2.0, 10), 1.0);
        assert_eq!(e.lr(2.0, 25), 0.5);
        let smooth = Schedule { staircase: false, ..e };
        assert!((smooth.lr(2.0, 5) - 2.0 * 0.5f64.powf(0.5)).abs() < 1e-12);
    }
}
