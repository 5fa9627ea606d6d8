//! Names of things inside a run directory.

use crate::storage::Location;

/// Sub-directory of the run directory that holds one directory per saved step.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Run state, config and the list of files with their sizes and hashes.
pub const METADATA_FILE: &str = "metadata.json";
/// Written last, create-only; holds the SHA-256 of `metadata.json`.
pub const COMMIT_FILE: &str = "COMMIT";

const STEP_PREFIX: &str = "step_";

/// `step_<N>`, the directory of step `N`.
pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_PREFIX}{step}")
}

/// The step a `step_<N>` directory name stands for; `None` for anything else.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(STEP_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `step_007` would name the same step as `step_7`; only the canonical spelling counts.
    let step: u64 = digits.parse().ok()?;
    (step_dir_name(step) == name).then_some(step)
}

/// File name of tensor shard `index` of `count`.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("tensors-{index:05}-of-{count:05}.safetensors")
}

pub fn checkpoints_location(run: &Location) -> Location {
    run.join(CHECKPOINTS_DIR)
}

pub fn step_location(run: &Location, step: u64) -> Location {
    checkpoints_location(run).join(&step_dir_name(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_dir_names_round_trip_and_reject_lookalikes() {
        for step in [0, 7, 1000, u64::MAX] {
            assert_eq!(parse_step_dir(&step_dir_name(step)), Some(step));
        }
        for bad in ["step_", "step_007", "step_1a", "step-1", "1", "step_+1", "step_99999999999999999999"] {
            assert_eq!(parse_step_dir(bad), None, "{bad}");
        }
    }
}
