//! CLIP: scores how well images match captions, used to rerank generated
//! images, and trained contrastively on image-caption data. Weights, config,
//! tokenizer and preprocessing follow Hugging Face transformers, so its CLIP
//! checkpoints load unchanged.

mod config;
mod model;
mod params;
mod preprocess;
mod scorer;
mod steps;
mod tokenizer;
mod train_config;
mod trainer;

pub use config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use model::{l2_normalize, similarity, Clip, ClipOutput};
pub use params::{load_checkpoint, parameter_specs, CONFIG_FILE, WEIGHTS_FILE};
pub use preprocess::{pil_bicubic, Preprocessor};
pub use scorer::{Scorer, ScorerOptions};
pub use tokenizer::{ClipTokenizer, BOS, EOS};
pub use steps::{ClipSetup, ClipSteps, EVAL_STATS, MAX_LOGIT_SCALE, TRAIN_STATS};
pub use tokenizer::train_clip_tokenizer;
pub use train_config::{ClipDataConfig, ClipTrainConfig};
pub use trainer::{export_hf, ClipTrainer};
