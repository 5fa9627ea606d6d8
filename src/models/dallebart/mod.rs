//! DalleBart: the seq2seq model that writes image tokens for a caption.

mod config;
mod model;

pub use config::DalleBartConfig;
pub use model::DalleBart;
