//! DalleBart: the seq2seq model that writes image tokens for a caption, and
//! its training (config, compiled step programs, the [`Trainer`]).

mod config;
pub mod flax;
pub mod init_from;
mod memory;
mod model;
mod params;
mod partition;
mod steps;
mod train_config;
mod trainer;

pub use config::DalleBartConfig;
pub use memory::{parameter_count, training_memory};
pub use model::{CrossAttentionKv, DalleBart, DecoderCache};
pub use params::{parameter_groups, parameter_specs};
pub use flax::{load_weights_dir, ImportedDalleBart};
pub use partition::model_axis_dim;
pub use steps::{accumulator_names, compile_step_programs, MeshPlacements, StepPrograms, StepSetup};
pub use train_config::TrainConfig;
pub use trainer::Trainer;
