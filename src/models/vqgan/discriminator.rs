//! The PatchGAN discriminator of taming-transformers (`NLayerDiscriminator`):
//! strided 4x4 convolutions that score overlapping patches as real or fake.
//!
//! taming normalises with BatchNorm; here GroupNorm (32 groups) takes its
//! place, so a patch's score depends only on its own image: the same on one
//! device or many, with no cross-replica statistics and no running averages.

use super::blocks::{conv, group_norm};
use crate::graph::{Result, Tensor};
use crate::nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorConfig {
    /// Strided (halving) layers after the first convolution.
    #[serde(default = "default_layers")]
    pub n_layers: usize,
    /// Channels of the first convolution; doubled per layer up to 8x.
    #[serde(default = "default_ndf")]
    pub ndf: i64,
}

fn default_layers() -> usize {
    3
}
fn default_ndf() -> i64 {
    64
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        DiscriminatorConfig { n_layers: default_layers(), ndf: default_ndf() }
    }
}

impl DiscriminatorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.n_layers == 0 {
            return Err("discriminator.n_layers must be at least 1".into());
        }
        if self.ndf <= 0 || self.ndf % super::config::GROUPS != 0 {
            return Err(format!("discriminator.ndf must be a positive multiple of {} (GroupNorm groups), got {}", super::config::GROUPS, self.ndf));
        }
        Ok(())
    }

    /// Patch logits `[N, h, w, 1]` for images `[N, R, R, C]`.
    pub fn forward(&self, vb: &VarBuilder, images: &Tensor) -> Result<Tensor> {
        let pad = [(1, 1), (1, 1)];
        let c_in = images.dim(3)?;
        let mut h = leaky_relu(&conv(&vb.pp("conv_0"), images, c_in, self.ndf, 4, 2, pad)?)?;
        let mut channels = self.ndf;
        for layer in 1..=self.n_layers {
            let out = self.ndf * (1 << layer.min(3));
            let stride = if layer < self.n_layers { 2 } else { 1 };
            h = conv(&vb.pp(&format!("conv_{layer}")), &h, channels, out, 4, stride, pad)?;
            h = leaky_relu(&group_norm(&vb.pp(&format!("norm_{layer}")), &h, out, super::config::GROUPS)?)?;
            channels = out;
        }
        conv(&vb.pp(&format!("conv_{}", self.n_layers + 1)), &h, channels, 1, 4, 1, pad)
    }
}

/// `max(x, 0.2 x)`.
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    x.maximum(&x.scale(0.2)?)
}
