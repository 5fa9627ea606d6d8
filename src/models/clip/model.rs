//! CLIP (Radford et al., "Learning Transferable Visual Models From Natural
//! Language Supervision"): a vision transformer over image patches and a causal
//! text transformer, each pooled to one vector and projected into a shared
//! space where cosine similarity times `exp(logit_scale)` scores image-text pairs.
//!
//! Parameter names and layouts are Hugging Face transformers' PyTorch
//! `CLIPModel` (`text_model.encoder.layers.0.self_attn.q_proj.weight` as
//! `[out, in]`, the patch embedding as an OIHW convolution kernel), so
//! `model.safetensors` of any HF CLIP checkpoint loads as it is. Images are
//! NHWC here (the framework's layout); the patch embedding is applied as the
//! equivalent matrix product over flattened `(channel, row, column)` patches.

use super::config::{Activation, ClipConfig};
use crate::graph::{Result, Tensor};
use crate::host::HostTensor;
use crate::nn::{gelu, quick_gelu, torch_embedding, torch_layer_norm, torch_linear, Init, Precision, VarBuilder};
use crate::DType;

pub struct Clip {
    pub config: ClipConfig,
    pub precision: Precision,
}

/// One transformer stack's sizes.
#[derive(Clone, Copy)]
struct Stack {
    width: i64,
    heads: i64,
    mlp: i64,
    layers: i64,
    act: Activation,
    eps: f64,
    causal: bool,
}

impl Clip {
    pub fn new(config: ClipConfig) -> Self {
        Clip { config, precision: Precision::f32() }
    }

    fn text_stack(&self) -> Stack {
        let t = &self.config.text;
        Stack {
            width: t.hidden_size,
            heads: t.num_attention_heads,
            mlp: t.intermediate_size,
            layers: t.num_hidden_layers,
            act: t.hidden_act,
            eps: t.layer_norm_eps,
            causal: true,
        }
    }

    fn vision_stack(&self) -> Stack {
        let v = &self.config.vision;
        Stack {
            width: v.hidden_size,
            heads: v.num_attention_heads,
            mlp: v.intermediate_size,
            layers: v.num_hidden_layers,
            act: v.hidden_act,
            eps: v.layer_norm_eps,
            causal: false,
        }
    }

    /// Multi-head self-attention over `x [B, L, d]`; queries scaled by `head_dim^-1/2`.
    fn attention(&self, vb: &VarBuilder, x: &Tensor, s: &Stack) -> Result<Tensor> {
        let (b, l, d) = (x.shape()[0], x.shape()[1], s.width);
        let hd = d / s.heads;
        let p = self.precision;
        // GPT-2-style init scaled by depth, as CLIP's reference initialisation.
        let in_std = (d as f64).powf(-0.5) * ((2 * s.layers) as f64).powf(-0.5);
        let heads = |name: &str, std: f64| -> Result<Tensor> {
            torch_linear(&vb.pp(name), x, d, d, true, std, p)?.reshape(&[b, l, s.heads, hd])?.transpose(&[0, 2, 1, 3])
        };
        let q = heads("q_proj", in_std)?.scale((hd as f64).powf(-0.5))?;
        let k = heads("k_proj", in_std)?;
        let v = heads("v_proj", in_std)?;
        let mut scores = q.dot_general(&k, &[0, 1], &[0, 1], &[3], &[3])?.cast(DType::F32)?; // [B, H, Lq, Lk]
        if s.causal {
            scores = scores.add(&causal_mask(x, l)?)?;
        }
        let weights = scores.softmax(-1)?.cast(p.compute)?;
        let out = weights.dot_general(&v, &[0, 1], &[0, 1], &[3], &[2])?; // [B, H, Lq, hd]
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, d])?;
        torch_linear(&vb.pp("out_proj"), &out, d, d, true, (d as f64).powf(-0.5), p)
    }

    fn mlp(&self, vb: &VarBuilder, x: &Tensor, s: &Stack) -> Result<Tensor> {
        let p = self.precision;
        let in_std = (s.width as f64).powf(-0.5) * ((2 * s.layers) as f64).powf(-0.5);
        let h = torch_linear(&vb.pp("fc1"), x, s.width, s.mlp, true, (2.0 * s.width as f64).powf(-0.5), p)?;
        let h = match s.act {
            Activation::QuickGelu => quick_gelu(&h)?,
            Activation::Gelu => gelu(&h)?,
        };
        torch_linear(&vb.pp("fc2"), &h, s.mlp, s.width, true, in_std, p)
    }

    /// Pre-LN encoder: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`, per layer.
    fn encoder(&self, vb: &VarBuilder, mut x: Tensor, s: &Stack) -> Result<Tensor> {
        for i in 0..s.layers {
            let layer = vb.pp(&format!("layers.{i}"));
            let h = torch_layer_norm(&layer.pp("layer_norm1"), &x, s.width, s.eps)?;
            x = x.add(&self.attention(&layer.pp("self_attn"), &h, s)?)?;
            let h = torch_layer_norm(&layer.pp("layer_norm2"), &x, s.width, s.eps)?;
            x = x.add(&self.mlp(&layer.pp("mlp"), &h, s)?)?;
        }
        Ok(x)
    }

    /// Pooled, projected text features `[T, projection_dim]` (not normalised)
    /// for token ids `[T, L]` (i32, `L <= max_position_embeddings`).
    pub fn text_features(&self, vb: &VarBuilder, ids: &Tensor) -> Result<Tensor> {
        let t = &self.config.text;
        let s = self.text_stack();
        let p = self.precision;
        let (n, l) = (ids.shape()[0], ids.shape()[1]);
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let tokens = torch_embedding(&emb.pp("token_embedding"), ids, t.vocab_size, s.width, 0.02, p)?;
        let positions = emb.pp("position_embedding").get("weight", &[t.max_position_embeddings, s.width], Init::Normal(0.01))?;
        let x = tokens.add(&p.weight(&positions)?.narrow(0, 0, l)?.unsqueeze(0)?)?;
        let x = self.encoder(&tm.pp("encoder"), x, &s)?;
        let x = torch_layer_norm(&tm.pp("final_layer_norm"), &x, s.width, s.eps)?;
        // Pool at the end-of-text token: the largest id under HF's legacy eos id 2
        // (OpenAI's vocabulary puts it last), else its first occurrence.
        let eos_at = if t.eos_token_id == 2 { ids.argmax(-1)? } else { ids.eq(&ids.scalar_like(t.eos_token_id as f64))?.cast(DType::I32)?.argmax(-1)? };
        let pick = Tensor::one_hot(&eos_at, l, x.dtype())?; // [T, L]
        let pooled = pick.dot_general(&x, &[0], &[0], &[1], &[1])?; // [T, d]
        debug_assert_eq!(pooled.shape(), &[n, s.width]);
        torch_linear(&vb.pp("text_projection"), &pooled, s.width, self.config.projection_dim, false, (s.width as f64).powf(-0.5), p)
    }

    /// Pooled, projected image features `[N, projection_dim]` (not normalised)
    /// for normalised pixels `[N, S, S, C]` (NHWC, `S = image_size`).
    pub fn image_features(&self, vb: &VarBuilder, pixels: &Tensor) -> Result<Tensor> {
        let v = &self.config.vision;
        let s = self.vision_stack();
        let p = self.precision;
        let (n, g, ps, c, d) = (pixels.shape()[0], self.config.grid(), v.patch_size, v.num_channels, s.width);
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        // Flatten each patch as (channel, row, column), the order of an OIHW kernel's inputs.
        let patches = pixels
            .cast(p.compute)?
            .reshape(&[n, g, ps, g, ps, c])?
            .transpose(&[0, 1, 3, 5, 2, 4])?
            .reshape(&[n, g * g, c * ps * ps])?;
        let kernel = emb.pp("patch_embedding").get("weight", &[d, c, ps, ps], Init::Normal(0.02))?;
        let kernel = p.weight(&kernel)?.reshape(&[d, c * ps * ps])?;
        let x = patches.dot_general(&kernel, &[], &[], &[2], &[1])?; // [N, g*g, d]
        let class = p.weight(&emb.get("class_embedding", &[d], Init::Normal((d as f64).powf(-0.5)))?)?;
        let class = class.broadcast_in_dim(&[n, 1, d], &[2])?;
        let x = Tensor::concat(&[&class, &x], 1)?;
        let positions = emb.pp("position_embedding").get("weight", &[g * g + 1, d], Init::Normal(0.02))?;
        let x = x.add(&p.weight(&positions)?.unsqueeze(0)?)?;
        let x = torch_layer_norm(&vm.pp("pre_layrnorm"), &x, d, s.eps)?;
        let x = self.encoder(&vm.pp("encoder"), x, &s)?;
        let cls = x.narrow(1, 0, 1)?.reshape(&[n, d])?;
        let pooled = torch_layer_norm(&vm.pp("post_layernorm"), &cls, d, s.eps)?;
        torch_linear(&vb.pp("visual_projection"), &pooled, d, self.config.projection_dim, false, (d as f64).powf(-0.5), p)
    }

    /// The learnable log inverse temperature (a scalar).
    pub fn logit_scale(&self, vb: &VarBuilder) -> Result<Tensor> {
        vb.get("logit_scale", &[], Init::Constant(self.config.logit_scale_init_value))
    }

    /// `logits_per_image [N, T]`: cosine similarities of normalised image and
    /// text embeddings times `exp(logit_scale)`, with the embeddings.
    pub fn forward(&self, vb: &VarBuilder, pixels: &Tensor, ids: &Tensor) -> Result<ClipOutput> {
        let image_embeds = l2_normalize(&self.image_features(vb, pixels)?)?;
        let text_embeds = l2_normalize(&self.text_features(vb, ids)?)?;
        let logits_per_image = similarity(&image_embeds, &text_embeds, &self.logit_scale(vb)?)?;
        Ok(ClipOutput { image_embeds, text_embeds, logits_per_image })
    }
}

pub struct ClipOutput {
    /// `[N, projection_dim]`, unit length.
    pub image_embeds: Tensor,
    /// `[T, projection_dim]`, unit length.
    pub text_embeds: Tensor,
    /// `[N, T]`.
    pub logits_per_image: Tensor,
}

/// Each row divided by its Euclidean norm (in f32).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.cast(DType::F32)?;
    x.mul(&x.square()?.sum(&[-1], true)?.rsqrt()?)
}

/// `exp(logit_scale) * images @ texts.T` for unit-length embeddings: `[N, T]`.
pub fn similarity(images: &Tensor, texts: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    let cos = images.dot_general(texts, &[], &[], &[1], &[1])?;
    cos.mul(&logit_scale.cast(DType::F32)?.exp()?)
}

/// `[L, L]` additive mask: 0 where the key is at or before the query, a large
/// negative number after it (the lowest f32, as transformers uses).
fn causal_mask(like: &Tensor, l: i64) -> Result<Tensor> {
    let values: Vec<f64> = (0..l).flat_map(|q| (0..l).map(move |k| if k > q { f32::MIN as f64 } else { 0.0 })).collect();
    let mask = HostTensor::from_f64(DType::F32, &[l, l], &values).map_err(|e| crate::graph::GraphError::Invalid(e.to_string()))?;
    Ok(like.graph().constant(mask))
}
