//! CLIP's sizes, read from a Hugging Face `config.json` (`text_config`,
//! `vision_config`, `projection_dim`, `logit_scale_init_value`) or from the
//! `model:` section of a `dalle train-clip` YAML config.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The MLP nonlinearity (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's checkpoints.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    pub fn parse(name: &str, key: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Invalid(format!("{key} is '{other}'; CLIP supports 'quick_gelu' and 'gelu'"))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
        }
    }
}

/// The causal text transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Token positions, also the padded prompt length (77).
    pub max_position_embeddings: i64,
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// End-of-text id. Hugging Face's legacy value 2 means "pool at the largest id"
    /// (OpenAI's vocabulary puts end-of-text last); any other value pools at its first occurrence.
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
}

/// The vision transformer over square patches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipVisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub image_size: i64,
    pub patch_size: i64,
    #[serde(default = "default_channels")]
    pub num_channels: i64,
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    /// Width of the shared embedding space.
    pub projection_dim: i64,
    /// Initial `logit_scale` (log of the inverse temperature), ln(1 / 0.07) in CLIP.
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> i64 {
    2
}
fn default_channels() -> i64 {
    3
}
fn default_logit_scale() -> f64 {
    2.6592
}

/// Reads `key` of a JSON object, falling back to Hugging Face's default.
struct Section<'a> {
    obj: &'a serde_json::Map<String, Value>,
    name: &'a str,
    origin: &'a str,
}

impl Section<'_> {
    fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| Error::Invalid(format!("{}: {}.{key} must be an integer, got {v}", self.origin, self.name))),
        }
    }
    fn float(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| Error::Invalid(format!("{}: {}.{key} must be a number, got {v}", self.origin, self.name))),
        }
    }
    fn activation(&self) -> Result<Activation> {
        match self.obj.get("hidden_act") {
            None | Some(Value::Null) => Ok(Activation::QuickGelu),
            Some(Value::String(s)) => Activation::parse(s, &format!("{}: {}.hidden_act", self.origin, self.name)),
            Some(v) => Err(Error::Invalid(format!("{}: {}.hidden_act must be a string, got {v}", self.origin, self.name))),
        }
    }
}

/// `text_config` overlaid with the legacy `text_config_dict` (which takes
/// precedence in Hugging Face's `CLIPConfig`), likewise for vision.
fn sub_config(root: &serde_json::Map<String, Value>, key: &str, origin: &str) -> Result<serde_json::Map<String, Value>> {
    let mut merged = serde_json::Map::new();
    for k in [key.to_string(), format!("{key}_dict")] {
        match root.get(&k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => merged.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Some(v) => return Err(Error::Invalid(format!("{origin}: '{k}' must be an object, got {v}"))),
        }
    }
    Ok(merged)
}

impl ClipConfig {
    /// Parses a Hugging Face CLIP `config.json`; `origin` names it in errors.
    pub fn from_hf_json(text: &str, origin: &str) -> Result<ClipConfig> {
        let root: Value = serde_json::from_str(text).map_err(|e| Error::Invalid(format!("{origin} is not valid JSON: {e}")))?;
        let root = root.as_object().ok_or_else(|| Error::Invalid(format!("{origin} must hold a JSON object")))?;
        let t = sub_config(root, "text_config", origin)?;
        let v = sub_config(root, "vision_config", origin)?;
        let top = Section { obj: root, name: "config", origin };
        let (t, v) = (Section { obj: &t, name: "text_config", origin }, Section { obj: &v, name: "vision_config", origin });
        let config = ClipConfig {
            text: ClipTextConfig {
                vocab_size: t.int("vocab_size", 49408)?,
                hidden_size: t.int("hidden_size", 512)?,
                intermediate_size: t.int("intermediate_size", 2048)?,
                num_hidden_layers: t.int("num_hidden_layers", 12)?,
                num_attention_heads: t.int("num_attention_heads", 8)?,
                max_position_embeddings: t.int("max_position_embeddings", 77)?,
                hidden_act: t.activation()?,
                layer_norm_eps: t.float("layer_norm_eps", 1e-5)?,
                eos_token_id: t.int("eos_token_id", 2)?,
            },
            vision: ClipVisionConfig {
                hidden_size: v.int("hidden_size", 768)?,
                intermediate_size: v.int("intermediate_size", 3072)?,
                num_hidden_layers: v.int("num_hidden_layers", 12)?,
                num_attention_heads: v.int("num_attention_heads", 12)?,
                image_size: v.int("image_size", 224)?,
                patch_size: v.int("patch_size", 32)?,
                num_channels: v.int("num_channels", 3)?,
                hidden_act: v.activation()?,
                layer_norm_eps: v.float("layer_norm_eps", 1e-5)?,
            },
            projection_dim: top.int("projection_dim", 512)?,
            logit_scale_init_value: top.float("logit_scale_init_value", 2.6592)?,
        };
        config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Reads `config.json` from a file.
    pub fn load_hf(path: &Path) -> Result<ClipConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::from_hf_json(&text, &path.display().to_string())
    }

    /// The Hugging Face `config.json` of this model, so trained weights load in `transformers`.
    pub fn to_hf_json(&self) -> Value {
        let (t, v) = (&self.text, &self.vision);
        serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": {
                "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                "max_position_embeddings": t.max_position_embeddings, "hidden_act": t.hidden_act.name(),
                "layer_norm_eps": t.layer_norm_eps, "eos_token_id": t.eos_token_id, "projection_dim": self.projection_dim,
            },
            "vision_config": {
                "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                "image_size": v.image_size, "patch_size": v.patch_size, "num_channels": v.num_channels,
                "hidden_act": v.hidden_act.name(), "layer_norm_eps": v.layer_norm_eps, "projection_dim": self.projection_dim,
            },
        })
    }

    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let (t, v) = (&self.text, &self.vision);
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.max_position_embeddings", t.max_position_embeddings),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.num_channels", v.num_channels),
            ("projection_dim", self.projection_dim),
        ];
        if let Some((k, val)) = positive.iter().find(|(_, v)| *v < 1) {
            return Err(format!("{k} must be at least 1, got {val}"));
        }
        if t.hidden_size % t.num_attention_heads != 0 {
            return Err(format!("text_config.hidden_size ({}) must be divisible by text_config.num_attention_heads ({})", t.hidden_size, t.num_attention_heads));
        }
        if v.hidden_size % v.num_attention_heads != 0 {
            return Err(format!("vision_config.hidden_size ({}) must be divisible by vision_config.num_attention_heads ({})", v.hidden_size, v.num_attention_heads));
        }
        if v.image_size % v.patch_size != 0 {
            return Err(format!("vision_config.image_size ({}) must be a multiple of vision_config.patch_size ({})", v.image_size, v.patch_size));
        }
        Ok(())
    }

    /// Patches per image side.
    pub fn grid(&self) -> i64 {
        self.vision.image_size / self.vision.patch_size
    }
}
