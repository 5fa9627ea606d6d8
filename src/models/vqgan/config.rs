//! VQGAN hyper-parameters: the fields of vqgan-jax's `VQGANConfig` (and
//! taming-transformers' `ddconfig`) that change the network.

use serde::{Deserialize, Serialize};

/// GroupNorm groups of the reference (taming and vqgan-jax fix it at 32).
pub const GROUPS: i64 = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqganConfig {
    /// Base channel count; level `i` has `ch * ch_mult[i]` channels.
    pub ch: i64,
    pub ch_mult: Vec<i64>,
    pub num_res_blocks: usize,
    /// Feature-map sizes (height) at which attention blocks are used.
    #[serde(default)]
    pub attn_resolutions: Vec<i64>,
    pub z_channels: i64,
    /// Codebook vector size.
    pub embed_dim: i64,
    /// Codebook size.
    pub n_embed: i64,
    /// Image height and width.
    pub resolution: i64,
    #[serde(default = "three")]
    pub in_channels: i64,
    #[serde(default = "three")]
    pub out_ch: i64,
    /// Weight of the commitment term `|z - sg(e)|^2` in the codebook loss.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Compare latents and codes by cosine similarity: both are scaled to
    /// unit length before the lookup (ViT-VQGAN's l2-normalised codes).
    /// Every code then lies where the encoder's outputs can reach it, which
    /// keeps most of a small codebook in use in short trainings; off, the
    /// quantizer is taming's (and the released checkpoints').
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub l2_codes: bool,
    /// GroupNorm groups in the autoencoder's normalisation layers (32 in
    /// the reference). With as many groups as channels each channel is
    /// normalised alone over the image, which erases a flat image's colour
    /// from the features: small models of flat synthetic images want fewer.
    #[serde(default = "default_groups")]
    pub norm_groups: i64,
    /// Finite scalar quantization instead of the learnt codebook: the values
    /// per latent channel, e.g. `[8, 8, 4]` (`embed_dim` = their count,
    /// `n_embed` = their product). Empty: taming's codebook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fsq_levels: Vec<i64>,
    /// With `fsq_levels`: weight of `|z - sg(round(z))|^2` (latents and grid
    /// in [-1, 1]), which pulls latents to the middle of their grid cell. The
    /// straight-through estimator alone leaves latents wherever they drifted,
    /// and those of flat regions that sit on a rounding boundary then flip
    /// between two codes of the same colour from patch to patch: noise the
    /// seq2seq model has to learn. 0 (the paper's FSQ): no such term.
    #[serde(default)]
    pub fsq_commitment: f64,
}

fn three() -> i64 {
    3
}
fn default_groups() -> i64 {
    GROUPS
}
fn default_beta() -> f64 {
    0.25
}

impl VqganConfig {
    /// The f16 / 16384-code VQGAN of DALL·E mini.
    pub fn f16_16384() -> Self {
        VqganConfig {
            ch: 128,
            ch_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            z_channels: 256,
            embed_dim: 256,
            n_embed: 16384,
            resolution: 256,
            in_channels: 3,
            out_ch: 3,
            beta: 0.25,
            l2_codes: false,
            norm_groups: GROUPS,
            fsq_levels: vec![],
            fsq_commitment: 0.0,
        }
    }

    /// A small f4 model for 32x32 images, for tests and the CPU demo.
    pub fn tiny() -> Self {
        VqganConfig {
            ch: 32,
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![8],
            z_channels: 32,
            embed_dim: 32,
            n_embed: 256,
            resolution: 32,
            ..Self::f16_16384()
        }
    }

    pub fn num_resolutions(&self) -> usize {
        self.ch_mult.len()
    }

    /// Spatial reduction factor (2 per level after the first).
    pub fn downsample_factor(&self) -> i64 {
        1 << (self.num_resolutions().saturating_sub(1))
    }

    /// Side of the token grid: `resolution / downsample_factor`.
    pub fn grid_size(&self) -> i64 {
        self.resolution / self.downsample_factor()
    }

    /// Tokens per image (`grid_size^2`).
    pub fn image_length(&self) -> i64 {
        self.grid_size() * self.grid_size()
    }

    /// Checks what serde cannot; the message names the key (under `model.`).
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("ch", self.ch),
            ("z_channels", self.z_channels),
            ("embed_dim", self.embed_dim),
            ("n_embed", self.n_embed),
            ("resolution", self.resolution),
            ("in_channels", self.in_channels),
            ("out_ch", self.out_ch),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("model.{name} must be positive, got {v}"));
        }
        if self.ch_mult.is_empty() {
            return Err("model.ch_mult must list at least one level".into());
        }
        if let Some(m) = self.ch_mult.iter().find(|m| **m <= 0) {
            return Err(format!("model.ch_mult entries must be positive, got {m}"));
        }
        if self.num_res_blocks == 0 {
            return Err("model.num_res_blocks must be at least 1".into());
        }
        let groups = self.norm_groups;
        if groups <= 0 {
            return Err(format!("model.norm_groups must be positive, got {groups}"));
        }
        for (name, channels) in [("ch", self.ch), ("z_channels", self.z_channels)] {
            if channels % groups != 0 {
                return Err(format!("model.{name} ({channels}) must be a multiple of the {groups} GroupNorm groups (model.norm_groups)"));
            }
        }
        if self.resolution % self.downsample_factor() != 0 {
            return Err(format!(
                "model.resolution ({}) must be divisible by the downsampling factor {} of {} levels (model.ch_mult)",
                self.resolution,
                self.downsample_factor(),
                self.num_resolutions()
            ));
        }
        if !self.fsq_levels.is_empty() {
            let levels = &self.fsq_levels;
            if let Some(l) = levels.iter().find(|l| **l < 2) {
                return Err(format!("model.fsq_levels entries must be at least 2, got {l}"));
            }
            if self.embed_dim != levels.len() as i64 {
                return Err(format!("model.embed_dim ({}) must equal the number of model.fsq_levels ({})", self.embed_dim, levels.len()));
            }
            let product = levels.iter().try_fold(1i64, |p, l| p.checked_mul(*l).filter(|p| *p <= 1 << 24));
            if product != Some(self.n_embed) {
                return Err(format!("model.n_embed ({}) must equal the product of model.fsq_levels {levels:?}", self.n_embed));
            }
            if self.l2_codes {
                return Err("model.l2_codes applies to the learnt codebook; leave it out with model.fsq_levels".into());
            }
        }
        if !(self.beta >= 0.0) {
            return Err(format!("model.beta must be non-negative, got {}", self.beta));
        }
        if !(self.fsq_commitment >= 0.0) {
            return Err(format!("model.fsq_commitment must be non-negative, got {}", self.fsq_commitment));
        }
        if self.fsq_commitment > 0.0 && self.fsq_levels.is_empty() {
            return Err("model.fsq_commitment applies to model.fsq_levels; the learnt codebook's commitment weight is model.beta".into());
        }
        Ok(())
    }
}
