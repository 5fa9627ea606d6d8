//! Datasets and loaders: batches of caption tokens and image tokens.

mod batch;
pub mod images;
pub mod shapes;
mod synthetic;

pub use batch::{Batch, Example};
pub use synthetic::Synthetic;
