//! VQGAN hyper-parameters: the fields of vqgan-jax's `VQGANConfig` (and
//! taming-transformers' `ddconfig`) that change the network.

use serde::{Deserialize, Serialize};

/// GroupNorm groups in every normalisation layer (fixed by the reference).
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
}

fn three() -> i64 {
    3
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
        for (name, channels) in [("ch", self.ch), ("z_channels", self.z_channels)] {
            if channels % GROUPS != 0 {
                return Err(format!("model.{name} ({channels}) must be a multiple of the {GROUPS} GroupNorm groups"));
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
        if !(self.beta >= 0.0) {
            return Err(format!("model.beta must be non-negative, got {}", self.beta));
        }
        Ok(())
    }
}
