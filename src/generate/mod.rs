//! Text to image: the compiled KV-cache sampler, sampling settings, reranking
//! of candidates by a scorer (CLIP), and the outputs of a generation (PNG
//! files, grids, `results.jsonl`).
//!
//! The command line (`dalle generate`), the demo server and the end-to-end
//! pipeline all call this library API.

mod model_source;
mod next_token;
pub mod output;
mod rerank;
mod sampler;
mod settings;
mod text_to_image;

pub use next_token::{next_token, super_condition, SamplingInputs};
pub use sampler::{row_key, Flow, Generated, Progress, Request, RunOptions, Sampler};
pub use settings::{SamplingSettings, SettingsShape};
pub use model_source::{load_dallebart, LoadedDalleBart};
pub use rerank::{rerank, ImageScorer, Reranked};
pub use text_to_image::{PromptImages, TextToImage, Timing};
