//! dalle-mini's released checkpoints: its `config.json` to and from our
//! config, its flax tree (layers one by one, or stacked along a leading axis
//! under `FlaxBart{Encoder,Decoder}Layers` when saved with `use_scan`) to our
//! parameters, and model directories (converted or flax) loaded in memory.

use super::{parameter_specs, DalleBartConfig};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::weights::{find_weights, load_sharded_safetensors, read_hf_config, FlaxFile, ModelKind, Plan, Source, WeightsSource, FLAX_WEIGHTS, HF_CONFIG};
use crate::weights::Layout;
use crate::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys of dalle-mini's config that change the network, with the only value
/// our model implements (dalle-mini's default when the key is absent).
const FIXED: [(&str, fn(&Value) -> bool, &str); 13] = [
    ("use_bias", |v| v == &json!(false), "false"),
    ("ln_type", |v| v == &json!("layernorm"), "\"layernorm\""),
    ("ln_positions", |v| v == &json!("normformer"), "\"normformer\""),
    ("use_head_scale", |v| v == &json!(false), "false"),
    ("use_cosine_attention", |v| v == &json!(false), "false"),
    ("use_absolute_position_embeddings", |v| v == &json!(true), "true"),
    ("use_swin_position_embeddings", |v| v == &json!(false), "false"),
    ("use_glu", |v| v == &json!(true), "true"),
    ("use_alibi", |v| v == &json!(false), "false"),
    ("sinkhorn_iters", |v| v.as_f64() == Some(1.0), "1 (sinkformer attention is not implemented)"),
    ("force_ln_scale", |v| v == &json!(false), "false"),
    ("activation_function", |v| v == &json!("gelu"), "\"gelu\""),
    ("tie_word_embeddings", |v| v == &json!(false), "false"),
];

/// Our config from a dalle-mini `config.json` (`origin` names it in errors),
/// and whether the release normalises captions (`normalize_text`).
/// Settings our model does not implement are refused, naming the key.
pub fn config_from_hf(c: &Value, origin: &str) -> Result<(DalleBartConfig, bool)> {
    let model_type = c.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    if model_type != "dallebart" {
        return Err(Error::Invalid(format!("{origin}: model_type is '{model_type}', not 'dallebart': this is not a DALL·E mini checkpoint")));
    }
    for (key, ok, want) in FIXED {
        if let Some(v) = c.get(key) {
            if !ok(v) {
                return Err(Error::Invalid(format!("{origin}: {key} = {v} is not supported (our DalleBart implements {key} = {want})")));
            }
        }
    }
    let int = |key: &str| -> Result<i64> {
        c.get(key).and_then(|v| v.as_i64()).ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' is missing or not an integer")))
    };
    let flag = |key: &str, default: bool| -> Result<bool> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' must be true or false, got {v}"))),
        }
    };
    let layers = |key: &str| -> Result<usize> { usize::try_from(int(key)?).map_err(|_| Error::Invalid(format!("{origin}: '{key}' must not be negative"))) };
    let config = DalleBartConfig {
        d_model: int("d_model")?,
        encoder_layers: layers("encoder_layers")?,
        decoder_layers: layers("decoder_layers")?,
        encoder_attention_heads: int("encoder_attention_heads")?,
        decoder_attention_heads: int("decoder_attention_heads")?,
        encoder_ffn_dim: int("encoder_ffn_dim")?,
        decoder_ffn_dim: int("decoder_ffn_dim")?,
        encoder_vocab_size: int("encoder_vocab_size")?,
        image_vocab_size: int("image_vocab_size")?,
        max_text_length: int("max_text_length")?,
        image_length: int("image_length")?,
        init_std: c.get("init_std").and_then(|v| v.as_f64()).unwrap_or(0.02),
        scale_embedding: flag("scale_embedding", false)?,
        use_final_ln_encoder: flag("use_final_ln_encoder", true)?,
        use_final_ln_decoder: flag("use_final_ln_decoder", true)?,
        init_from: None,
        scan_layers: false,
        remat_layers: false,
    };
    config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
    Ok((config, flag("normalize_text", false)?))
}

/// A dalle-mini `config.json` for our config (the layout `dalle export` writes: `use_scan` off).
pub fn config_to_hf(c: &DalleBartConfig, normalize_text: bool) -> Value {
    // Two literals: one would pass serde_json's macro recursion limit.
    let mut config = json!({
        "architectures": ["eBart"],
        "model_type": "dallebart",
        "normalize_text": normalize_text,
        "encoder_vocab_size": c.encoder_vocab_size,
        "image_vocab_size": c.image_vocab_size,
        "image_length": c.image_length,
        "max_text_length": c.max_text_length,
        "encoder_layers": c.encoder_layers,
        "encoder_ffn_dim": c.encoder_ffn_dim,
        "encoder_attention_heads": c.encoder_attention_heads,
        "decoder_layers": c.decoder_layers,
        "decoder_ffn_dim": c.decoder_ffn_dim,
        "decoder_attention_heads": c.decoder_attention_heads,
        "activation_function": "gelu",
        "d_model": c.d_model,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "init_std": c.init_std,
        "scale_embedding": c.scale_embedding,
        "gradient_checkpointing": false,
        "use_scan": false,
        "use_cache": true,
    });
    let rest = json!({
        "is_encoder_decoder": true,
        "tie_word_embeddings": false,
        "do_sample": true,
        "use_bias": false,
        "ln_type": "layernorm",
        "ln_positions": "normformer",
        "use_head_scale": false,
        "use_cosine_attention": false,
        "tau_init": 0.05,
        "use_absolute_position_embeddings": true,
        "use_swin_position_embeddings": false,
        "use_deepnet_scaling": false,
        "use_subln_init": false,
        "use_glu": true,
        "use_alibi": false,
        "sinkhorn_iters": 1,
        "use_final_ln_encoder": c.use_final_ln_encoder,
        "use_final_ln_decoder": c.use_final_ln_decoder,
        "force_ln_scale": false,
        "decoder_start_token_id": c.image_vocab_size,
        "bos_token_id": c.image_vocab_size,
        "pad_token_id": c.image_vocab_size,
        "eos_token_id": c.image_vocab_size,
        "forced_eos_token_id": null,
        "min_length": c.image_length + 1,
        "max_length": c.image_length + 1,
    });
    if let (Some(a), Value::Object(b)) = (config.as_object_mut(), rest) {
        a.extend(b);
    }
    config
}

/// The flax path (and stacked row) of one of our parameter names.
fn flax_source(name: &str, scanned: bool) -> Source {
    if scanned {
        for (ours, stacked) in [("layers.FlaxBartEncoderLayer_", "layers.FlaxBartEncoderLayers"), ("layers.FlaxBartDecoderLayer_", "layers.FlaxBartDecoderLayers")] {
            if let Some(at) = name.find(ours) {
                let rest = &name[at + ours.len()..];
                let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
                if let Ok(row) = index.parse::<usize>() {
                    return Source { name: format!("{}{stacked}.{tail}", &name[..at]), row: Some(row), layout: Layout::Same };
                }
            }
        }
    }
    Source { name: name.to_string(), row: None, layout: Layout::Same }
}

/// Whether the checkpoint stacks its layers (`use_scan`); the tree decides, not the config,
/// since releases made before `use_scan` existed do not mention it.
fn is_scanned(file: &FlaxFile) -> Result<bool> {
    let scanned = file.arrays.keys().any(|k| k.contains(".layers.FlaxBartEncoderLayers.") || k.contains(".layers.FlaxBartDecoderLayers."));
    let single = file.arrays.keys().any(|k| k.contains(".layers.FlaxBartEncoderLayer_") || k.contains(".layers.FlaxBartDecoderLayer_"));
    if scanned && single {
        return Err(Error::Invalid(format!("{} mixes stacked (use_scan) and per-layer arrays", file.path.display())));
    }
    Ok(scanned)
}

/// The plan mapping a dalle-mini flax tree to our parameters; `dtype` converts, `None` keeps the file's.
pub fn flax_plan(config: &DalleBartConfig, file: &FlaxFile, dtype: Option<DType>) -> Result<Plan> {
    let scanned = is_scanned(file)?;
    let specs = parameter_specs(config)?;
    let wanted = specs.into_iter().map(|s| (s.name.clone(), s.ty.shape.clone(), flax_source(&s.name, scanned))).collect();
    Plan::build(file, wanted, dtype)
}

/// A DalleBart model directory loaded in memory.
pub struct ImportedDalleBart {
    pub config: DalleBartConfig,
    pub weights: BTreeMap<String, HostTensor>,
    /// `tokenizer.json` beside the weights.
    pub tokenizer: PathBuf,
    pub normalize_text: bool,
    /// dalle-mini's word-frequency table for hashtags, when it sits beside the weights.
    pub word_frequency: Option<PathBuf>,
    /// Source arrays not used (flax directories only).
    pub unused: Vec<String>,
}

/// Loads a DalleBart directory: one written by `dalle convert`, or a released
/// flax directory (`config.json` + `flax_model.msgpack`), converted in memory.
pub fn load_weights_dir(dir: &Path) -> Result<ImportedDalleBart> {
    let tokenizer = dir.join("tokenizer.json");
    let word_frequency = Some(dir.join(crate::weights::WORD_FREQUENCY_FILE)).filter(|p| p.is_file());
    let require_tokenizer = || {
        if tokenizer.is_file() {
            Ok(())
        } else {
            Err(Error::Invalid(format!("{} is missing the tokenizer file tokenizer.json", dir.display())))
        }
    };
    match find_weights(dir)? {
        WeightsSource::Converted(m) => {
            if m.kind != ModelKind::Dallebart {
                return Err(Error::Invalid(format!("{} holds a {} model, not DalleBart", dir.display(), m.kind)));
            }
            let origin = dir.join(crate::weights::CONVERTED_MANIFEST).display().to_string();
            let model = m.model.ok_or_else(|| Error::Invalid(format!("{origin} has no 'model' section")))?;
            let config: DalleBartConfig = serde_yaml::from_value(model).map_err(|e| Error::Invalid(format!("{origin}: model: {e}")))?;
            config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
            require_tokenizer()?;
            let weights = load_sharded_safetensors(dir)?;
            check_weights(&config, &weights, &dir.display().to_string())?;
            Ok(ImportedDalleBart { config, weights, tokenizer, normalize_text: m.normalize_text, word_frequency, unused: Vec::new() })
        }
        WeightsSource::Flax { kind, config } => {
            let origin = dir.join(HF_CONFIG).display().to_string();
            if kind != ModelKind::Dallebart {
                return Err(Error::Invalid(format!("{origin} describes a {kind} model, not DalleBart")));
            }
            let (config, normalize_text) = config_from_hf(&config, &origin)?;
            require_tokenizer()?;
            let file = FlaxFile::open(&dir.join(FLAX_WEIGHTS))?;
            let plan = flax_plan(&config, &file, None)?;
            let weights = plan.load_all(&file)?;
            Ok(ImportedDalleBart { config, weights, tokenizer, normalize_text, word_frequency, unused: plan.unused })
        }
    }
}

/// Every parameter of `config` present with its shape and a float dtype.
fn check_weights(config: &DalleBartConfig, weights: &BTreeMap<String, HostTensor>, origin: &str) -> Result<()> {
    for s in parameter_specs(config)? {
        let t = weights.get(&s.name).ok_or_else(|| Error::Invalid(format!("{origin} has no parameter '{}'", s.name)))?;
        if t.shape != s.ty.shape || !t.dtype.is_float() {
            return Err(Error::Invalid(format!("{origin}: parameter '{}' is {}{:?}, the config needs a float tensor of shape {:?}", s.name, t.dtype, t.shape, s.ty.shape)));
        }
    }
    Ok(())
}

/// Reads the `config.json` of a flax directory as our config (for tools that only need the config).
pub fn read_hf_dallebart_config(dir: &Path) -> Result<(DalleBartConfig, bool)> {
    config_from_hf(&read_hf_config(dir)?, &dir.join(HF_CONFIG).display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_layers_map_to_rows() {
        let s = flax_source("model.encoder.layers.FlaxBartEncoderLayer_3.GLU_0.Dense_0.kernel", true);
        assert_eq!(s.name, "model.encoder.layers.FlaxBartEncoderLayers.GLU_0.Dense_0.kernel");
        assert_eq!(s.row, Some(3));
        let s = flax_source("model.decoder.layers.FlaxBartDecoderLayer_11.FlaxBartAttention_1.q_proj.kernel", true);
        assert_eq!((s.name.as_str(), s.row), ("model.decoder.layers.FlaxBartDecoderLayers.FlaxBartAttention_1.q_proj.kernel", Some(11)));
        assert_eq!(flax_source("lm_head.kernel", true).row, None);
        assert_eq!(flax_source("model.encoder.layers.FlaxBartEncoderLayer_3.GLU_0.Dense_0.kernel", false).row, None);
    }

    #[test]
    fn unsupported_settings_are_refused_by_key() {
        let mut c = config_to_hf(&DalleBartConfig::tiny(), true);
        let (back, normalize) = config_from_hf(&c, "config.json").unwrap();
        assert_eq!(back, DalleBartConfig::tiny());
        assert!(normalize);
        for (key, value) in [("use_alibi", json!(true)), ("ln_positions", json!("swinv2")), ("use_bias", json!(true)), ("sinkhorn_iters", json!(3)), ("use_swin_position_embeddings", json!(true))] {
            let mut bad = c.clone();
            bad[key] = value;
            let e = config_from_hf(&bad, "config.json").unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        c["model_type"] = json!("clip");
        assert!(config_from_hf(&c, "config.json").unwrap_err().to_string().contains("not 'dallebart'"));
    }
}
