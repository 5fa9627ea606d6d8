//! Training DalleBart: config, compiled step programs, batch sources, the loop, metrics.

mod config;
mod metrics;
mod source;
mod step;
mod trainer;

pub use config::{DataConfig, LoopConfig, TrainConfig};
pub use metrics::{MetricsWriter, StepMetrics};
pub use source::{BatchSource, SyntheticSource};
pub use step::{compile_step_programs, StepLayout, StepPrograms, StepSetup};
pub use trainer::{StepResult, Trainer};
