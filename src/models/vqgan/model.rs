//! The VQGAN autoencoder (Esser et al., "Taming Transformers"): a convolutional
//! encoder to a grid of latents, a vector quantizer that snaps each latent to
//! its nearest codebook entry, and a decoder back to pixels.
//!
//! Parameter names are vqgan-jax's flax tree (`encoder.down_0.block_0.norm1.scale`,
//! `quantize.embedding.embedding`, `decoder.up_2.upsample.conv.kernel`, ...), so
//! its checkpoints load as they are. The order of operations is
//! taming-transformers': inside a level, attention block `j` follows residual
//! block `j` (the released weights were trained that way).

use super::blocks::{attn_block, conv1, conv3, downsample, group_norm, resnet_block, swish, upsample};
use super::config::VqganConfig;
use super::fsq;
use crate::graph::{Result, Tensor};
use crate::nn::{Init, VarBuilder};

pub struct Vqgan {
    pub config: VqganConfig,
}

/// What the quantizer gives back for a latent grid.
pub struct Quantized {
    /// Codebook vectors `[N, g, g, embed_dim]` with the straight-through
    /// gradient: the forward value is the codebook entry, the backward pass
    /// hands the gradient to the encoder output unchanged.
    pub z_q: Tensor,
    /// Chosen codebook rows `[N, g * g]` (i32), row-major over the grid.
    pub indices: Tensor,
    /// `mean((sg(z) - e)^2) + beta * mean((z - sg(e))^2)`.
    pub codebook_loss: Tensor,
}

impl Vqgan {
    pub fn new(config: VqganConfig) -> Self {
        Vqgan { config }
    }

    fn level_channels(&self, level: usize) -> i64 {
        self.config.ch * self.config.ch_mult[level]
    }

    /// Encoder plus `quant_conv`: `[N, R, R, in_channels]` pixels in [-1, 1]
    /// to latents `[N, g, g, embed_dim]`.
    pub fn encode_latents(&self, vb: &VarBuilder, images: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let enc = vb.pp("encoder");
        let mut h = conv3(&enc.pp("conv_in"), images, c.in_channels, c.ch)?;
        let mut block_in = c.ch;
        let mut res = c.resolution;
        for level in 0..c.num_resolutions() {
            let down = enc.pp(&format!("down_{level}"));
            let block_out = self.level_channels(level);
            for j in 0..c.num_res_blocks {
                h = resnet_block(&down.pp(&format!("block_{j}")), &h, block_in, block_out, c.norm_groups)?;
                block_in = block_out;
                if c.attn_resolutions.contains(&res) {
                    h = attn_block(&down.pp(&format!("attn_{j}")), &h, block_in, c.norm_groups)?;
                }
            }
            if level + 1 != c.num_resolutions() {
                h = downsample(&down.pp("downsample"), &h, block_in)?;
                res /= 2;
            }
        }
        h = self.mid(&enc.pp("mid"), &h, block_in)?;
        h = swish(&group_norm(&enc.pp("norm_out"), &h, block_in, c.norm_groups)?)?;
        h = conv3(&enc.pp("conv_out"), &h, block_in, c.z_channels)?;
        conv1(&vb.pp("quant_conv"), &h, c.z_channels, c.embed_dim)
    }

    /// `post_quant_conv` plus decoder: latents `[N, g, g, embed_dim]` to pixels.
    pub fn decode_latents(&self, vb: &VarBuilder, z_q: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let dec = vb.pp("decoder");
        let z = conv1(&vb.pp("post_quant_conv"), z_q, c.embed_dim, c.z_channels)?;
        let mut block_in = self.level_channels(c.num_resolutions() - 1);
        let mut res = c.grid_size();
        let mut h = conv3(&dec.pp("conv_in"), &z, c.z_channels, block_in)?;
        h = self.mid(&dec.pp("mid"), &h, block_in)?;
        for level in (0..c.num_resolutions()).rev() {
            let up = dec.pp(&format!("up_{level}"));
            let block_out = self.level_channels(level);
            for j in 0..=c.num_res_blocks {
                h = resnet_block(&up.pp(&format!("block_{j}")), &h, block_in, block_out, c.norm_groups)?;
                block_in = block_out;
                if c.attn_resolutions.contains(&res) {
                    h = attn_block(&up.pp(&format!("attn_{j}")), &h, block_in, c.norm_groups)?;
                }
            }
            if level != 0 {
                h = upsample(&up.pp("upsample"), &h, block_in)?;
                res *= 2;
            }
        }
        h = swish(&group_norm(&dec.pp("norm_out"), &h, block_in, c.norm_groups)?)?;
        conv3(&dec.pp("conv_out"), &h, block_in, c.out_ch)
    }

    fn mid(&self, vb: &VarBuilder, h: &Tensor, channels: i64) -> Result<Tensor> {
        let groups = self.config.norm_groups;
        let h = resnet_block(&vb.pp("block_1"), h, channels, channels, groups)?;
        let h = attn_block(&vb.pp("attn_1"), &h, channels, groups)?;
        resnet_block(&vb.pp("block_2"), &h, channels, channels, groups)
    }

    /// The codebook `[n_embed, embed_dim]`, initialised uniform in ±1/n_embed
    /// as in taming; scaled to unit rows with `l2_codes`.
    pub fn codebook(&self, vb: &VarBuilder) -> Result<Tensor> {
        let c = &self.config;
        let codebook = vb.pp("quantize.embedding").get("embedding", &[c.n_embed, c.embed_dim], Init::Uniform(1.0 / c.n_embed as f64))?;
        self.on_sphere(&codebook)
    }

    /// With `l2_codes`, `x` scaled to unit length along its last axis; otherwise `x`.
    fn on_sphere(&self, x: &Tensor) -> Result<Tensor> {
        if !self.config.l2_codes {
            return Ok(x.clone());
        }
        x.mul(&x.square()?.sum(&[-1], true)?.add_scalar(1e-12)?.rsqrt()?)
    }

    /// Index of the nearest codebook entry for every latent vector, by
    /// `|z|^2 - 2 z.e + |e|^2` (one matmul instead of an `[M, K, D]` difference).
    pub fn nearest_codes(&self, vb: &VarBuilder, z: &Tensor) -> Result<Tensor> {
        let d = self.config.embed_dim;
        let codebook = self.codebook(vb)?;
        let flat = self.on_sphere(z)?.reshape_infer(&[-1, d])?.stop_gradient()?;
        let z2 = flat.square()?.sum(&[1], true)?;
        let e2 = codebook.square()?.sum(&[1], false)?.unsqueeze(0)?;
        let ze = flat.matmul(&codebook.stop_gradient()?.transpose(&[1, 0])?)?;
        let distance = z2.sub(&ze.scale(2.0)?)?.add(&e2)?;
        distance.neg()?.argmax(1)
    }

    /// Snaps latents `[N, g, g, D]` to their nearest codebook entries (or,
    /// with `fsq_levels`, to the finite scalar grid).
    pub fn quantize(&self, vb: &VarBuilder, z: &Tensor) -> Result<Quantized> {
        let shape = z.shape().to_vec();
        if !self.config.fsq_levels.is_empty() {
            let snapped = fsq::quantize(z, &self.config.fsq_levels)?;
            let indices = snapped.tokens.reshape(&[shape[0], shape[1] * shape[2]])?;
            let codebook_loss = snapped.commitment.scale(self.config.fsq_commitment)?;
            return Ok(Quantized { z_q: snapped.z_q, indices, codebook_loss });
        }
        let flat_indices = self.nearest_codes(vb, z)?;
        let z = self.on_sphere(z)?;
        let e = self.codebook(vb)?.take(&flat_indices, 0)?.reshape(&shape)?;
        let codebook_term = z.stop_gradient()?.sub(&e)?.square()?.mean_all()?;
        let commitment = z.sub(&e.stop_gradient()?)?.square()?.mean_all()?;
        let codebook_loss = codebook_term.add(&commitment.scale(self.config.beta)?)?;
        let z_q = z.add(&e.sub(&z)?.stop_gradient()?)?;
        let indices = flat_indices.reshape(&[shape[0], shape[1] * shape[2]])?;
        Ok(Quantized { z_q, indices, codebook_loss })
    }

    /// Codebook vectors `[N, g, g, D]` for token rows `[N, g * g]`.
    pub fn lookup(&self, vb: &VarBuilder, indices: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let n = indices.dim(0)?;
        let g = c.grid_size();
        if !c.fsq_levels.is_empty() {
            return fsq::lookup(&indices.reshape(&[n, g, g])?, &c.fsq_levels);
        }
        self.codebook(vb)?.take(&indices.reshape(&[n * g * g])?, 0)?.reshape(&[n, g, g, c.embed_dim])
    }

    /// Image tokens `[N, g * g]` (i32) for pixels `[N, R, R, 3]` in [-1, 1].
    pub fn encode(&self, vb: &VarBuilder, images: &Tensor) -> Result<Tensor> {
        let z = self.encode_latents(vb, images)?;
        Ok(self.quantize(vb, &z)?.indices)
    }

    /// Pixels `[N, R, R, 3]` for image tokens `[N, g * g]`.
    pub fn decode(&self, vb: &VarBuilder, indices: &Tensor) -> Result<Tensor> {
        let z_q = self.lookup(vb, indices)?;
        self.decode_latents(vb, &z_q)
    }

    /// Encode, quantize and decode: `(reconstruction, quantized)`.
    pub fn reconstruct(&self, vb: &VarBuilder, images: &Tensor) -> Result<(Tensor, Quantized)> {
        let z = self.encode_latents(vb, images)?;
        let q = self.quantize(vb, &z)?;
        let out = self.decode_latents(vb, &q.z_q)?;
        Ok((out, q))
    }

    /// The weight whose gradients set the adaptive GAN weight: the decoder's last convolution kernel.
    pub fn last_layer_name() -> &'static str {
        "decoder.conv_out.kernel"
    }
}

