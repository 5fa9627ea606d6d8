//! Training DalleBart: config, compiled step, loop, metrics.

mod config;
mod metrics;
mod step;
mod trainer;

pub use config::{DataConfig, LoopConfig, TrainConfig};
pub use metrics::{MetricsWriter, StepMetrics};
pub use step::{compile_eval_step, compile_train_step, model_params, StepLayout};
pub use trainer::Trainer;
