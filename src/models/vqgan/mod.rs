//! VQGAN: the image tokenizer that turns pictures into codebook indices and back.

mod blocks;
mod codec;
mod config;
mod model;
mod params;
mod weights;

pub use blocks::swish;
pub use codec::VqganCodec;
pub use config::VqganConfig;
pub use model::{Quantized, Vqgan};
pub use params::parameter_specs;
pub use weights::{load_safetensors, read_safetensors, save_safetensors, select_params, to_safetensors};
