//! VQGAN: the image tokenizer that turns pictures into codebook indices and back.

mod blocks;
mod codec;
mod config;
mod dataset;
mod discriminator;
pub mod flax;
mod fsq;
mod losses;
mod lpips;
mod memory;
mod model;
mod params;
mod steps;
mod train_config;
mod trainer;


pub use blocks::swish;
pub use codec::VqganCodec;
pub use config::VqganConfig;
pub use model::{Quantized, Vqgan};
pub use params::parameter_specs;
pub use crate::weights::{
    load_safetensors, load_safetensors_with_metadata, read_safetensors, read_safetensors_with_metadata, save_safetensors, save_safetensors_with_metadata, select_params,
    to_safetensors, to_safetensors_with_metadata,
};
pub use discriminator::DiscriminatorConfig;
pub use losses::{adaptive_weight, generator_loss, hinge_discriminator_loss, LossConfig, PixelLoss};
pub use lpips::Lpips;
pub use memory::training_memory;
pub use crate::train::NetLayout;
pub use steps::{VqganSetup, VqganSteps, DISCRIMINATOR_STATS, GENERATOR_GAN_STATS, GENERATOR_STATS};
pub use train_config::{ImageDataConfig, VqganTrainConfig};
pub use trainer::{checkpoint_weights, load_weights, open_vqgan, psnr, weights_file, StepStats, VqganTrainer, CONFIG_KEY, WEIGHTS_FILE};
pub use dataset::{encode_dataset, read_tokens, shard_name, weights_sha256, EncodeManifest, EncodeOptions, EncodeReport, ShardEntry, ENCODE_MANIFEST};
