//! The pipeline config (`configs/pipeline/shapes.yaml`): one section per
//! stage, the VQGAN and DalleBart sections being ordinary training configs,
//! and named presets of overrides (`--set preset=full`).
//!
//! Loading goes through the one config system: the file's tree, then the
//! chosen preset's `key: value` overrides, then the command line's `--set`,
//! then the keys the pipeline owns (where each stage reads its inputs and
//! writes its run), then the typed config and its checks.

use crate::config::{from_value, load_str, parse_overrides, set_path};
use crate::error::{Error, Result};
use crate::models::clip::ClipTrainConfig;
use crate::models::vqgan::VqganTrainConfig;
use crate::models::dallebart::TrainConfig;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The preset whose overrides were applied.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Named sets of overrides, `dotted.key: value`; `default` may be empty.
    #[serde(default)]
    pub presets: BTreeMap<String, BTreeMap<String, Value>>,
    pub shapes: ShapesConfig,
    pub tokenizer: TokenizerConfig,
    pub vqgan: VqganTrainConfig,
    pub dallebart: TrainConfig,
    /// The CLIP that reranks generated images, trained on the training split.
    pub clip: ClipTrainConfig,
    pub generate: GenerateConfig,
    #[serde(default)]
    pub report: ReportConfig,
}

fn default_preset() -> String {
    "default".into()
}

/// The dataset and its compositional split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapesConfig {
    /// Image side in pixels (must equal `vqgan.model.resolution`).
    pub size: u32,
    /// Training images (none of them shows a held-out triple).
    pub train_images: usize,
    /// Held-out images: each shows at least one held-out triple. Their
    /// captions are the prompts judged on held-out combinations.
    pub heldout_images: usize,
    /// Share of the (colour, shape, position) triples held out of training.
    pub held_out_fraction: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Byte-level BPE vocabulary size (an upper bound: shapes captions hold few merges).
    pub vocab_size: usize,
}

/// Sampling and reranking for the judged prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Held-out captions to generate for (the first ones of the held-out split).
    pub heldout_prompts: usize,
    /// Training captions to generate for (the first ones of the training split).
    pub train_prompts: usize,
    /// Images sampled per prompt; CLIP reranking keeps the best one.
    pub images_per_prompt: usize,
    #[serde(default = "one_f64")]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0: all).
    #[serde(default)]
    pub top_k: usize,
    /// Nucleus sampling mass (1: off).
    #[serde(default = "one_f64")]
    pub top_p: f64,
    /// Super-conditioning scale (1: plain conditional sampling).
    #[serde(default = "one_f64")]
    pub condition_scale: f64,
    #[serde(default)]
    pub seed: u64,
}

fn one_f64() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Held-out prompts shown in the grid picture.
    #[serde(default = "default_grid_prompts")]
    pub grid_prompts: usize,
}

fn default_grid_prompts() -> usize {
    8
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig { grid_prompts: default_grid_prompts() }
    }
}

/// Folders of the run directory, relative to it.
pub mod paths {
    pub const CONFIG: &str = "pipeline.yaml";
    pub const SHAPES_TRAIN: &str = "shapes/train";
    pub const SHAPES_HELDOUT: &str = "shapes/heldout";
    pub const SPLIT: &str = "shapes/split.json";
    pub const VQGAN_RUN: &str = "vqgan";
    pub const ENCODED_TRAIN: &str = "encoded/train";
    pub const ENCODED_HELDOUT: &str = "encoded/heldout";
    pub const TOKENIZER: &str = "encoded/tokenizer.json";
    pub const DALLEBART_RUN: &str = "dallebart";
    pub const CLIP_RUN: &str = "clip";
    /// The trained CLIP as a Hugging Face directory (what `dalle clip score --clip` reads).
    pub const CLIP_MODEL: &str = "clip/model";
    pub const GENERATED: &str = "generated";
    pub const JUDGE: &str = "judge";
    pub const REPORT_DIR: &str = "report";
    pub const REPORT_MD: &str = "report.md";
    pub const REPORT_JSON: &str = "report.json";
}

/// Keys the pipeline sets itself (stage inputs and runs inside the run
/// directory, as paths relative to it); a config may leave them out but not
/// point them elsewhere.
fn owned_keys() -> Vec<(&'static str, Value)> {
    let s = |v: &str| Value::String(v.to_string());
    vec![
        ("vqgan.data.images", s(paths::SHAPES_TRAIN)),
        ("vqgan.data.eval_images", s(paths::SHAPES_HELDOUT)),
        ("vqgan.train.run_dir", s(paths::VQGAN_RUN)),
        ("dallebart.data.kind", s("files")),
        ("dallebart.data.train_files", Value::Sequence(vec![s(paths::ENCODED_TRAIN)])),
        ("dallebart.data.eval_files", Value::Sequence(vec![s(paths::ENCODED_HELDOUT)])),
        ("dallebart.data.tokenizer", s(paths::TOKENIZER)),
        ("dallebart.train.run_dir", s(paths::DALLEBART_RUN)),
        ("clip.data.images", s(paths::SHAPES_TRAIN)),
        ("clip.data.eval_images", s(paths::SHAPES_HELDOUT)),
        ("clip.train.run_dir", s(paths::CLIP_RUN)),
    ]
}

/// Reads the value at a dotted key, if present.
fn get_path<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(root, |node, part| node.as_mapping()?.get(Value::String(part.to_string())))
}

/// Inserts `value` at a dotted key, creating sections on the way.
fn insert_path(root: &mut Value, key: &str, value: Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for part in &parts[..parts.len() - 1] {
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().expect("made a mapping above");
        node = map.entry(Value::String(part.to_string())).or_insert_with(|| Value::Mapping(Default::default()));
    }
    if let Some(map) = node.as_mapping_mut() {
        map.insert(Value::String(parts[parts.len() - 1].to_string()), value);
    }
}

impl PipelineConfig {
    /// Reads `path`, applies the preset (the file's `preset`, or the one
    /// named by a `preset=NAME` override) and the other overrides, and checks
    /// the result. Returns the config and its complete tree (stored in the run).
    pub fn load(path: &Path, overrides: &[String]) -> Result<(PipelineConfig, Value)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading the pipeline config {}", path.display()), e))?;
        Self::load_str(&text, &path.display().to_string(), overrides)
    }

    pub fn load_str(text: &str, name: &str, overrides: &[String]) -> Result<(PipelineConfig, Value)> {
        let invalid = |e: crate::config::ConfigError| Error::Invalid(format!("{name}: {e}"));
        let mut raw: Value = serde_yaml::from_str(text).map_err(|e| Error::Invalid(format!("{name} is not valid YAML: {e}")))?;
        // The owned keys go in before the first typed pass (the stage
        // configs require some of them); a file that sets them otherwise is refused.
        for (key, value) in owned_keys() {
            match get_path(&raw, key) {
                Some(v) if *v != value => {
                    return Err(Error::Invalid(format!(
                        "{name}: {key} is set by the pipeline (to {}); leave it out",
                        serde_yaml::to_string(&value).unwrap_or_default().trim()
                    )))
                }
                _ => insert_path(&mut raw, key, value),
            }
        }
        let with_owned = serde_yaml::to_string(&raw).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        let (_, mut tree): (PipelineConfig, Value) = load_str(&with_owned, name, &[]).map_err(invalid)?;

        let overrides = parse_overrides(overrides).map_err(invalid)?;
        if let Some((key, _)) = overrides.iter().find(|(k, _)| owned_keys().iter().any(|(o, _)| o == k)) {
            return Err(Error::Invalid(format!("{key} is set by the pipeline to a folder of the run directory and cannot be overridden")));
        }
        let preset = match overrides.iter().rev().find(|(k, _)| k == "preset") {
            Some((_, v)) => v.as_str().map(str::to_string).ok_or_else(|| Error::Invalid("preset must be a name, e.g. --set preset=full".into()))?,
            None => get_path(&tree, "preset").and_then(Value::as_str).unwrap_or("default").to_string(),
        };
        let presets: BTreeMap<String, BTreeMap<String, Value>> = get_path(&tree, "presets")
            .map(|v| from_value(v.clone()))
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let Some(preset_overrides) = presets.get(&preset) else {
            let known: Vec<&str> = presets.keys().map(String::as_str).collect();
            return Err(Error::Invalid(format!(
                "unknown preset '{preset}' (presets in {name}: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        for (key, value) in preset_overrides {
            if owned_keys().iter().any(|(o, _)| o == key) {
                return Err(Error::Invalid(format!("{name}: presets.{preset}.{key} is set by the pipeline and cannot be overridden")));
            }
            set_path(&mut tree, key, value.clone()).map_err(|e| Error::Invalid(format!("{name}: presets.{preset}: {e}")))?;
        }
        for (key, value) in overrides {
            set_path(&mut tree, &key, value).map_err(invalid)?;
        }
        let config: PipelineConfig = from_value(tree.clone()).map_err(invalid)?;
        config.validate().map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        Ok((config, tree))
    }

    /// The most devices a training stage uses, or `None` when one trains on
    /// all of the client's (0). A CPU client needs no more virtual devices:
    /// idle ones slowed the one-device VQGAN stage by a third.
    pub fn cpu_devices_used(&self) -> Option<usize> {
        let counts = [self.vqgan.train.devices, self.dallebart.train.devices, self.clip.train.devices];
        if counts.contains(&0) {
            None
        } else {
            counts.into_iter().max()
        }
    }

    /// Checks within and between sections; messages name the keys.
    pub fn validate(&self) -> Result<(), String> {
        self.vqgan.validate().map_err(|e| format!("vqgan.{e}"))?;
        self.dallebart.validate().map_err(|e| format!("dallebart.{e}"))?;
        self.clip.validate().map_err(|e| format!("clip.{e}"))?;
        if self.clip.data.tokenizer.is_some() {
            return Err("clip.data.tokenizer: the pipeline's CLIP trains its own tokenizer on the training captions; leave it out".into());
        }
        let s = &self.shapes;
        if s.size < 16 {
            return Err(format!("shapes.size must be at least 16 pixels, got {}", s.size));
        }
        if s.train_images == 0 || s.heldout_images == 0 {
            return Err("shapes.train_images and shapes.heldout_images must be at least 1".into());
        }
        if !(0.0..0.5).contains(&s.held_out_fraction) || s.held_out_fraction == 0.0 {
            return Err(format!("shapes.held_out_fraction must be in (0, 0.5), got {}", s.held_out_fraction));
        }
        let v = &self.vqgan.model;
        if v.resolution != s.size as i64 {
            return Err(format!("vqgan.model.resolution ({}) must equal shapes.size ({})", v.resolution, s.size));
        }
        let d = &self.dallebart.model;
        if d.image_vocab_size != v.n_embed {
            return Err(format!("dallebart.model.image_vocab_size ({}) must equal vqgan.model.n_embed ({})", d.image_vocab_size, v.n_embed));
        }
        if d.image_length != v.image_length() {
            return Err(format!("dallebart.model.image_length ({}) must equal the VQGAN's tokens per image ({})", d.image_length, v.image_length()));
        }
        if self.tokenizer.vocab_size < 261 {
            return Err(format!("tokenizer.vocab_size must be at least 261 (256 bytes + 5 special tokens), got {}", self.tokenizer.vocab_size));
        }
        if self.tokenizer.vocab_size as i64 > d.encoder_vocab_size {
            return Err(format!(
                "tokenizer.vocab_size ({}) must not exceed dallebart.model.encoder_vocab_size ({})",
                self.tokenizer.vocab_size, d.encoder_vocab_size
            ));
        }
        let g = &self.generate;
        if g.heldout_prompts == 0 || g.heldout_prompts > s.heldout_images {
            return Err(format!("generate.heldout_prompts must be in 1..={} (shapes.heldout_images), got {}", s.heldout_images, g.heldout_prompts));
        }
        if g.train_prompts > s.train_images {
            return Err(format!("generate.train_prompts must be at most shapes.train_images ({}), got {}", s.train_images, g.train_prompts));
        }
        if g.images_per_prompt == 0 {
            return Err("generate.images_per_prompt must be at least 1".into());
        }
        if !(g.temperature > 0.0) {
            return Err(format!("generate.temperature must be positive, got {}", g.temperature));
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(format!("generate.top_p must be in (0, 1], got {}", g.top_p));
        }
        if !(g.condition_scale >= 1.0) {
            return Err(format!("generate.condition_scale must be at least 1, got {}", g.condition_scale));
        }
        if self.report.grid_prompts == 0 {
            return Err("report.grid_prompts must be at least 1".into());
        }
        Ok(())
    }
}
