//! DalleBart hyper-parameters (the fields of dalle-mini's `DalleBartConfig` we use).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DalleBartConfig {
    pub d_model: i64,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: i64,
    pub decoder_attention_heads: i64,
    pub encoder_ffn_dim: i64,
    pub decoder_ffn_dim: i64,
    /// Text vocabulary (encoder embedding rows).
    pub encoder_vocab_size: i64,
    /// Image codebook size; the decoder embedding and `lm_head` have one more row (BOS).
    pub image_vocab_size: i64,
    pub max_text_length: i64,
    pub image_length: i64,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Multiply token embeddings by sqrt(d_model).
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "yes")]
    pub use_final_ln_encoder: bool,
    #[serde(default = "yes")]
    pub use_final_ln_decoder: bool,
    /// Start training from these weights (a model directory or storage URL,
    /// converted or released flax) instead of a random initialisation; the
    /// other model keys default to the directory's config and must agree with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// Run each stack of layers as a loop over one compiled layer body (as
    /// dalle-mini's `use_scan`), so compile time does not grow with depth.
    /// Only the computation changes: parameters keep their per-layer names,
    /// so checkpoints are the same either way.
    #[serde(default)]
    pub scan_layers: bool,
    /// Keep only each layer's input for the backward pass and recompute the
    /// rest (gradient checkpointing): less activation memory for about one
    /// more forward pass, unrolled or scanned (mega's batch of 448 fits a v3
    /// core scanned only with it).
    #[serde(default)]
    pub remat_layers: bool,
}

fn default_init_std() -> f64 {
    0.02
}

fn yes() -> bool {
    true
}

impl DalleBartConfig {
    /// The released DALL·E mini (about 437.8M parameters).
    pub fn mini() -> Self {
        DalleBartConfig {
            d_model: 1024,
            encoder_layers: 12,
            decoder_layers: 12,
            encoder_attention_heads: 16,
            decoder_attention_heads: 16,
            encoder_ffn_dim: 2730,
            decoder_ffn_dim: 2730,
            encoder_vocab_size: 50264,
            image_vocab_size: 16384,
            max_text_length: 64,
            image_length: 256,
            init_std: 0.02,
            scale_embedding: false,
            use_final_ln_encoder: true,
            use_final_ln_decoder: true,
            init_from: None,
            scan_layers: false,
            remat_layers: false,
        }
    }

    /// DALL·E mega (about 2.59B parameters).
    pub fn mega() -> Self {
        DalleBartConfig {
            d_model: 2048,
            encoder_layers: 24,
            decoder_layers: 24,
            encoder_attention_heads: 32,
            decoder_attention_heads: 32,
            encoder_ffn_dim: 4096,
            decoder_ffn_dim: 4096,
            encoder_vocab_size: 50272,
            image_vocab_size: 16415,
            init_std: 0.01,
            ..Self::mini()
        }
    }

    /// A few-thousand-parameter model for tests and the CPU demo.
    pub fn tiny() -> Self {
        DalleBartConfig {
            d_model: 32,
            encoder_layers: 2,
            decoder_layers: 2,
            encoder_attention_heads: 4,
            decoder_attention_heads: 4,
            encoder_ffn_dim: 64,
            decoder_ffn_dim: 64,
            encoder_vocab_size: 128,
            image_vocab_size: 64,
            max_text_length: 16,
            image_length: 16,
            ..Self::mini()
        }
    }

    /// The decoder's start token (one past the image codebook).
    pub fn bos_token(&self) -> i64 {
        self.image_vocab_size
    }

    /// Checks divisibility and positivity; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("d_model", self.d_model),
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_attention_heads", self.decoder_attention_heads),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("encoder_vocab_size", self.encoder_vocab_size),
            ("image_vocab_size", self.image_vocab_size),
            ("max_text_length", self.max_text_length),
            ("image_length", self.image_length),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("model.{name} must be positive, got {v}"));
        }
        for (name, heads) in [("encoder_attention_heads", self.encoder_attention_heads), ("decoder_attention_heads", self.decoder_attention_heads)] {
            if self.d_model % heads != 0 {
                return Err(format!("model.d_model ({}) must be divisible by model.{name} ({heads})", self.d_model));
            }
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 {
            return Err("model.encoder_layers and model.decoder_layers must be at least 1".into());
        }
        Ok(())
    }
}
