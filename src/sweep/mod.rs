//! Hyperparameter sweeps: grid, random and successive-halving (ASHA-style) searches
//! over any dotted training-config key, with trials trained by a [`TrialRunner`].
//!
//! A sweep lives in one directory (local or object store):
//! `sweep_state.json` (the durable record, rewritten whole after every change),
//! `trials/<id>/` (each trial's own run directory), and the outputs written at the
//! end: `results.md`, `results.csv`, `curves.png`, `loss_vs_<key>.png`, `best.yaml`.
//! Running the same sweep again in the same directory skips finished trials and
//! resumes the unfinished ones; the final outputs match an uninterrupted sweep.

mod config;
mod driver;
pub mod report;
mod rng;
mod runner;
mod space;
mod state;
mod store;
mod trainer_runner;

pub use config::{Metric, Objective, Parallelism, PlannedTrial, Strategy, SweepConfig};
pub use driver::{run_sweep, run_sweep_parallel, RunnerFactory, SweepSummary, TRIALS_DIR};
pub use report::Report;
pub use runner::{Decision, TrialOutcome, TrialRunner, TrialSpec};
pub use space::ParamSpec;
pub use state::{SweepState, TrialRecord, TrialStatus, STATE_FILE};
pub use trainer_runner::TrainerRunner;
