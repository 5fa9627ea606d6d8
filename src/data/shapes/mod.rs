//! The "shapes" dataset: procedural images of coloured circles, squares,
//! triangles and stars on plain backgrounds, with ground-truth captions
//! ("a small red circle at the top left and a large blue square at the
//! bottom right"), and a checker that reads an image back and says whether
//! a caption holds. The whole text-to-image pipeline can be trained and
//! judged on it without people looking at pictures.

mod caption;
mod checker;
mod generate;
mod geometry;
mod scene;
mod split;
mod vocab;

pub use caption::{parse_caption, ShapeSpec};
pub use checker::{check, check_specs, detect, CheckReport, Detected, Detection};
pub use generate::{file_stem, generate, generate_where, scene_at, GenerateReport};
pub use scene::{Scene, ShapeObject};
pub use split::{triple_phrase, HeldOut, Triple};
pub use vocab::{Background, Color, Kind, Position, Size};
