//! When a periodic save is due: every so much wall time and/or every N steps.

use std::time::{Duration, Instant};

/// Saves are due when `every_steps` divides the step (multiples, so a resumed
/// run saves at the same steps as one that never stopped) or when `every` has
/// passed since the last save (or since the schedule started). Saves at the
/// end of training and on a stop signal are the trainer's to make.
#[derive(Clone, Debug)]
pub struct SaveSchedule {
    every: Option<Duration>,
    every_steps: Option<u64>,
    last_step: u64,
    last_time: Instant,
}

impl SaveSchedule {
    /// A schedule that starts counting at `start_step` (the restored step, or 0) and `now`.
    pub fn new(every_secs: Option<f64>, every_steps: Option<u64>, start_step: u64, now: Instant) -> Result<Self, String> {
        let every = match every_secs {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(format!("checkpoint.every_secs must be a positive number of seconds, got {s}")),
        };
        if every_steps == Some(0) {
            return Err("checkpoint.every_steps must be at least 1 when set".into());
        }
        Ok(SaveSchedule { every, every_steps, last_step: start_step, last_time: now })
    }

    /// Whether to save after update `step` at time `now`.
    pub fn due(&self, step: u64, now: Instant) -> bool {
        if step <= self.last_step {
            return false;
        }
        let by_steps = self.every_steps.is_some_and(|n| step.is_multiple_of(n));
        let by_time = self.every.is_some_and(|d| now.saturating_duration_since(self.last_time) >= d);
        by_steps || by_time
    }

    /// Records that a save of `step` was requested at `now`.
    pub fn mark_saved(&mut self, step: u64, now: Instant) {
        self.last_step = step;
        self.last_time = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_by_steps_and_by_time() {
        let t0 = Instant::now();
        let mut s = SaveSchedule::new(Some(10.0), Some(4), 0, t0).unwrap();
        assert!(!s.due(3, t0));
        assert!(s.due(4, t0));
        assert!(s.due(5, t0 + Duration::from_secs(10)));
        assert!(!s.due(5, t0 + Duration::from_secs(9)));
        s.mark_saved(5, t0 + Duration::from_secs(10));
        assert!(!s.due(5, t0 + Duration::from_secs(100)), "the saved step itself is never due again");
        assert!(!s.due(6, t0 + Duration::from_secs(19)));
        assert!(s.due(6, t0 + Duration::from_secs(20)));
        assert!(s.due(8, t0 + Duration::from_secs(11)));
    }

    #[test]
    fn disabled_triggers_and_bad_values() {
        let t0 = Instant::now();
        let s = SaveSchedule::new(None, None, 0, t0).unwrap();
        assert!(!s.due(1000, t0 + Duration::from_secs(1_000_000)));
        assert!(SaveSchedule::new(Some(0.0), None, 0, t0).unwrap_err().contains("checkpoint.every_secs"));
        assert!(SaveSchedule::new(Some(f64::NAN), None, 0, t0).is_err());
        assert!(SaveSchedule::new(None, Some(0), 0, t0).unwrap_err().contains("checkpoint.every_steps"));
    }
}
