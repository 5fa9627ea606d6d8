//! Datasets and loaders: batches of caption tokens and image tokens.

mod batch;
mod synthetic;

pub use batch::{Batch, Example};
pub use synthetic::Synthetic;
