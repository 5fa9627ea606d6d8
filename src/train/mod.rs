//! Training: the shared loop ([`fit`]) and run directory ([`RunDir`]), and the
//! DalleBart trainer with its compiled step programs.

mod config;
mod fit;
pub mod init_from;
mod metrics;
mod run_dir;
mod step;
mod trainer;

pub use config::{LoopConfig, TrainConfig};
pub use fit::{fit, FitOptions, Outcome, StepRecord, Trainable};
pub use metrics::{MetricsLog, StepMetrics, LOSS_PLOT_FILE, METRICS_FILE};
pub use run_dir::{RunDir, CONFIG_FILE};
pub use step::{compile_step_programs, StepLayout, StepPrograms, StepSetup};
pub use trainer::Trainer;
