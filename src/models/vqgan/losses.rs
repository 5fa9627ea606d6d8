//! The VQGAN training objective (taming-transformers' `VQLPIPSWithDiscriminator`):
//! L1 (or squared) reconstruction, optional LPIPS perceptual distance, codebook loss, and a
//! hinge GAN loss whose weight adapts to the gradient magnitudes at the
//! decoder's last layer.

use crate::graph::{grad, Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// The pixel reconstruction distance.
    #[serde(default)]
    pub pixel_loss: PixelLoss,
    #[serde(default = "one")]
    pub pixel_weight: f64,
    #[serde(default = "one")]
    pub perceptual_weight: f64,
    #[serde(default = "one")]
    pub codebook_weight: f64,
    /// Multiplies the adaptive GAN weight.
    #[serde(default = "default_disc_weight")]
    pub disc_weight: f64,
    /// GAN loss factor from `disc_start` on (zero before).
    #[serde(default = "one")]
    pub disc_factor: f64,
    /// First update at which the discriminator trains and the GAN loss counts.
    #[serde(default)]
    pub disc_start: u64,
    /// VGG16 feature weights (safetensors, torchvision names); with `lpips`, enables the perceptual loss.
    #[serde(default)]
    pub vgg16: Option<String>,
    /// LPIPS linear-head weights (safetensors, `lin{k}.model.1.weight` names).
    #[serde(default)]
    pub lpips: Option<String>,
}

/// taming's VQGAN uses L1. L2 weighs a pixel by the size of its error, so a
/// missed small object on a flat background (a few percent of the pixels,
/// all far off) counts for more than under L1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelLoss {
    #[default]
    L1,
    L2,
}

impl PixelLoss {
    /// Mean absolute or mean squared difference.
    pub fn distance(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let d = a.sub(b)?;
        match self {
            PixelLoss::L1 => d.abs()?.mean_all(),
            PixelLoss::L2 => d.square()?.mean_all(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn default_disc_weight() -> f64 {
    0.75
}

impl Default for LossConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults")
    }
}

impl LossConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("pixel_weight", self.pixel_weight),
            ("perceptual_weight", self.perceptual_weight),
            ("codebook_weight", self.codebook_weight),
            ("disc_weight", self.disc_weight),
            ("disc_factor", self.disc_factor),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("loss.{name} must be a finite non-negative number, got {v}"));
            }
        }
        if self.vgg16.is_some() != self.lpips.is_some() {
            return Err("loss.vgg16 and loss.lpips must be given together (the perceptual loss needs both)".into());
        }
        Ok(())
    }
}

/// Generator side of the hinge GAN loss: `-mean(D(fake))`.
pub fn generator_loss(logits_fake: &Tensor) -> Result<Tensor> {
    logits_fake.mean_all()?.neg()
}

/// Discriminator side: `(mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))) / 2`.
pub fn hinge_discriminator_loss(logits_real: &Tensor, logits_fake: &Tensor) -> Result<Tensor> {
    let real = logits_real.scalar_like(1.0).sub(logits_real)?.maximum(&logits_real.zeros_like()?)?.mean_all()?;
    let fake = logits_fake.add_scalar(1.0)?.maximum(&logits_fake.zeros_like()?)?.mean_all()?;
    real.add(&fake)?.scale(0.5)
}

/// `disc_weight * clamp(|d nll / d w| / (|d g / d w| + 1e-4), 0, 1e4)` at the
/// last-layer weight `w`, computed in-graph and cut from the backward pass.
pub fn adaptive_weight(nll: &Tensor, g_loss: &Tensor, last_layer: &Tensor, disc_weight: f64) -> Result<Tensor> {
    let nll_grad = grad(nll, &[last_layer])?.remove(0);
    let g_grad = grad(g_loss, &[last_layer])?.remove(0);
    let norm = |t: &Tensor| t.square()?.sum_all()?.sqrt();
    let w = norm(&nll_grad)?.div(&norm(&g_grad)?.add_scalar(1e-4)?)?;
    w.clamp(0.0, 1e4)?.stop_gradient()?.scale(disc_weight)
}
