//! Datasets and loaders: batches of caption tokens and image tokens.
//!
//! `Dataset::open(&config.data, spec)` resolves the files and loads the
//! tokenizer; `train_loader(resume)` gives shuffled batches and a
//! `DataPosition` to save; `eval_loader()` gives the validation batches.

mod batch;
mod config;
mod files;
mod hashtags;
pub mod images;
mod jsonl_format;
mod loader;
mod normalize;
mod order;
mod parquet_format;
mod record;
pub mod shapes;
mod storage_io;
mod stream;
mod synthetic;
mod text;
mod unicode_text;

pub use batch::{Batch, Example};
pub use config::{DataConfig, DataFormat, DataKind, TOKENIZER_HINT};
pub use files::{resolve, write_dataset, DataFile};
pub use loader::{Dataset, Loader, LoaderSpec};
pub use normalize::{normalize_caption, TextNormalizer};
pub use record::{BadRow, BadRowKind, DataCounts, ParsedRow, RawRow, Record, RowSpec};
pub use stream::DataPosition;
pub use synthetic::Synthetic;
pub use text::{train_tokenizer, EncodedText, TextEncoder, TrainedInfo};
