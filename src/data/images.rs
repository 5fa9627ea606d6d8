//! Image datasets for the VQGAN: images with captions from a folder (a
//! caption `.txt` beside each image) or a CSV of `path,caption`, decoded,
//! resized and center-cropped to a square, and served as `[B, H, W, 3]` f32
//! batches in [-1, 1] by a background thread. Images that cannot be read
//! and images without a caption are skipped, counted and named (or, in
//! strict mode, are errors). Parquet image lists are not read here yet.

mod convert;
mod csv;
mod decode;
mod index;
mod loader;

pub use convert::{hwc_to_rgb, rgb_to_hwc, save_png};
pub use decode::{load_image, resize_and_center_crop};
pub use index::{ImageIndex, ImageRecord};
pub use loader::{ImageBatch, ImageLoader, LoaderOptions, SkipReason, SkipReport, Skipped};
