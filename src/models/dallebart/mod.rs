//! DalleBart: the seq2seq model that writes image tokens for a caption.

mod config;
pub mod flax;
mod model;
mod params;

pub use config::DalleBartConfig;
pub use model::{CrossAttentionKv, DalleBart, DecoderCache};
pub use params::{parameter_groups, parameter_specs};
pub use flax::{load_weights_dir, ImportedDalleBart};
