//! The DalleBart seq2seq model: BART with NormFormer layer norms and GLU
//! feed-forward blocks, reading a caption and writing image tokens.
//! Parameter names follow dalle-mini's flax tree, so its checkpoints map 1:1.

use super::config::DalleBartConfig;
use crate::graph::{Result, Tensor};
use crate::nn::{embedding, gelu, layer_norm, layer_stack, linear, Layer, Precision, StackMode, VarBuilder};
use crate::DType;
use std::rc::Rc;

const EPS: f64 = 1e-5;
/// Added to masked attention scores; finite so a fully masked row cannot make NaNs.
const MASKED: f64 = -1e9;

#[derive(Clone)]
pub struct DalleBart {
    pub config: DalleBartConfig,
    pub precision: Precision,
}

/// `x [B, T, d]` projected by `vb`'s `kernel` and split into heads `[B, H, T, Dh]`.
fn project_heads(vb: &VarBuilder, x: &Tensor, d: i64, heads: i64, std: f64, p: Precision) -> Result<Tensor> {
    let (b, t) = (x.dim(0)?, x.dim(1)?);
    linear(vb, x, d, d, std, p)?.reshape(&[b, t, heads, d / heads])?.transpose(&[0, 2, 1, 3])
}

/// Scaled dot-product attention of heads `q [B, H, Tq, Dh]` over `k`, `v
/// [B, H, Tk, Dh]` with the additive `bias` (broadcast to `[B, H, Tq, Tk]`);
/// returns the heads merged back to `[B, Tq, H * Dh]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, p: Precision) -> Result<Tensor> {
    let (b, h, tq, dh) = (q.dim(0)?, q.dim(1)?, q.dim(2)?, q.dim(3)?);
    let q = q.scale(1.0 / (dh as f64).sqrt())?;
    let scores = q.dot_general(k, &[0, 1], &[0, 1], &[3], &[3])?; // [B, H, Tq, Tk]
    let scores = scores.cast(DType::F32)?.add(bias)?;
    let weights = scores.softmax(-1)?.cast(p.compute)?;
    let out = weights.dot_general(v, &[0, 1], &[0, 1], &[3], &[2])?; // [B, H, Tq, Dh]
    out.transpose(&[0, 2, 1, 3])?.reshape(&[b, tq, h * dh])
}

/// Multi-head attention of `x` over the sequence `kv`; `bias` is added to
/// the scores `[B or 1, 1, Tq, Tk]`.
fn attention(vb: &VarBuilder, x: &Tensor, kv: &Tensor, bias: &Tensor, d: i64, heads: i64, std: f64, p: Precision) -> Result<Tensor> {
    let q = project_heads(&vb.pp("q_proj"), x, d, heads, std, p)?;
    let k = project_heads(&vb.pp("k_proj"), kv, d, heads, std, p)?;
    let v = project_heads(&vb.pp("v_proj"), kv, d, heads, std, p)?;
    linear(&vb.pp("out_proj"), &attend(&q, &k, &v, bias, p)?, d, d, std, p)
}

/// NormFormer GLU block: LN -> gelu(x W0) * (x W1) -> LN -> W2.
fn glu(vb: &VarBuilder, x: &Tensor, d: i64, ffn: i64, std: f64, p: Precision) -> Result<Tensor> {
    let x = layer_norm(&vb.pp("LayerNorm_0"), x, d, false, true, EPS)?;
    let w = gelu(&linear(&vb.pp("Dense_0"), &x, d, ffn, std, p)?)?;
    let v = linear(&vb.pp("Dense_1"), &x, d, ffn, std, p)?;
    let h = layer_norm(&vb.pp("LayerNorm_1"), &w.mul(&v)?, ffn, false, true, EPS)?;
    linear(&vb.pp("Dense_2"), &h, ffn, d, std, p)
}

/// `[B, T]` keep-mask (nonzero = attend) to an additive `[B, 1, 1, T]` bias.
fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = (mask.dim(0)?, mask.dim(1)?);
    let keep = mask.ne(&mask.zeros_like()?)?;
    let zeros = mask.graph().zeros(DType::F32, &[b, t]);
    let masked = mask.graph().full(MASKED, DType::F32, &[b, t]);
    Tensor::select(&keep, &zeros, &masked)?.reshape(&[b, 1, 1, t])
}

/// Lower-triangular causal bias `[1, 1, T, T]`.
fn causal_bias(x: &Tensor, t: i64) -> Result<Tensor> {
    let g = x.graph();
    let row = g.iota(DType::I32, &[t, t], 0)?;
    let col = g.iota(DType::I32, &[t, t], 1)?;
    let zeros = g.zeros(DType::F32, &[t, t]);
    let masked = g.full(MASKED, DType::F32, &[t, t]);
    Tensor::select(&col.le(&row)?, &zeros, &masked)?.reshape(&[1, 1, t, t])
}

/// Keys and values of the decoder's self-attention for every image position,
/// per layer `[B, H, image_length, Dh]`, filled in as tokens are generated.
pub struct DecoderCache {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
}

/// Cross-attention keys and values per decoder layer `[B, H, T_text, Dh]`,
/// computed once from the encoder states, and the caption's padding bias.
pub struct CrossAttentionKv {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
    pub bias: Tensor,
}

impl DalleBart {
    pub fn new(config: DalleBartConfig, precision: Precision) -> Self {
        DalleBart { config, precision }
    }

    /// Token plus position embeddings, normalised. Positions start at
    /// `offset` (a scalar i32 tensor) when given, else at 0.
    fn embed(&self, vb: &VarBuilder, ids: &Tensor, vocab: i64, positions: i64, offset: Option<&Tensor>) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let mut x = embedding(&vb.pp("embed_tokens"), ids, vocab, c.d_model, c.init_std, p)?;
        if c.scale_embedding {
            x = x.scale((c.d_model as f64).sqrt())?;
        }
        let t = ids.dim(1)?;
        let table = p.weight(&vb.pp("embed_positions").get("embedding", &[positions, c.d_model], crate::nn::Init::Normal(c.init_std))?)?;
        let pos = match offset {
            Some(start) => table.dynamic_slice(&[start, &start.zeros_like()?], &[t, c.d_model])?,
            None => table.narrow(0, 0, t)?,
        };
        layer_norm(&vb.pp("layernorm_embedding"), &x.add(&pos)?, c.d_model, true, true, EPS)
    }

    /// Encoder states `[B, T_text, d_model]` for `input_ids` and its keep-mask.
    pub fn encode(&self, vb: &VarBuilder, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let vb = vb.pp("model.encoder");
        let mut h = self.embed(&vb, input_ids, c.encoder_vocab_size, c.max_text_length, None)?;
        let bias = padding_bias(attention_mask)?;
        let model = self.clone();
        let layer: Rc<Layer> = Rc::new(move |l: &VarBuilder, h: &Tensor, x: &[Tensor]| model.encoder_layer(l, h, &x[0]));
        h = layer_stack(&vb.pp("layers"), c.encoder_layers, |i| format!("FlaxBartEncoderLayer_{i}"), self.stack_mode(), &h, &[&bias], layer)?;
        if c.use_final_ln_encoder {
            h = layer_norm(&vb.pp("final_ln"), &h, c.d_model, false, true, EPS)?;
        }
        Ok(h)
    }

    fn stack_mode(&self) -> StackMode {
        match (self.config.scan_layers, self.config.remat_layers) {
            (true, true) => StackMode::ScanRemat,
            (true, false) => StackMode::Scan,
            (false, true) => StackMode::Remat,
            (false, false) => StackMode::Unrolled,
        }
    }

    /// One encoder layer: self-attention over the caption (padding masked by
    /// `bias`), then the GLU block, each added to the residual stream.
    fn encoder_layer(&self, l: &VarBuilder, h: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let x = layer_norm(&l.pp("LayerNorm_0"), h, c.d_model, false, true, EPS)?;
        let x = attention(&l.pp("FlaxBartAttention_0"), &x, &x, bias, c.d_model, c.encoder_attention_heads, c.init_std, self.precision)?;
        let x = layer_norm(&l.pp("LayerNorm_1"), &x, c.d_model, true, true, EPS)?;
        let h = h.add(&x)?;
        h.add(&glu(&l.pp("GLU_0"), &h, c.d_model, c.encoder_ffn_dim, c.init_std, self.precision)?)
    }

    /// One decoder layer around its two attentions: `self_attention` and
    /// `cross_attention` map the normalised input to the attention output
    /// (full sequence in training, one cached position in generation).
    fn decoder_layer(
        &self,
        l: &VarBuilder,
        h: &Tensor,
        self_attention: impl FnOnce(&VarBuilder, &Tensor) -> Result<Tensor>,
        cross_attention: impl FnOnce(&VarBuilder, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let x = layer_norm(&l.pp("LayerNorm_0"), h, c.d_model, false, true, EPS)?;
        let x = self_attention(&l.pp("FlaxBartAttention_0"), &x)?;
        let x = layer_norm(&l.pp("LayerNorm_1"), &x, c.d_model, true, true, EPS)?;
        let h = h.add(&x)?;
        let x = layer_norm(&l.pp("LayerNorm_2"), &h, c.d_model, false, true, EPS)?;
        let x = cross_attention(&l.pp("FlaxBartAttention_1"), &x)?;
        let x = layer_norm(&l.pp("LayerNorm_3"), &x, c.d_model, true, true, EPS)?;
        let h = h.add(&x)?;
        h.add(&glu(&l.pp("GLU_0"), &h, c.d_model, c.decoder_ffn_dim, c.init_std, self.precision)?)
    }

    /// Final layer norm and `lm_head`: logits over the image vocabulary plus BOS.
    fn head(&self, vb: &VarBuilder, h: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let h = if c.use_final_ln_decoder { layer_norm(&vb.pp("model.decoder.final_ln"), h, c.d_model, false, true, EPS)? } else { h.clone() };
        linear(&vb.pp("lm_head"), &h, c.d_model, c.image_vocab_size + 1, c.init_std, self.precision)
    }

    /// Logits `[B, T_img, image_vocab_size + 1]` for decoder inputs given encoder states.
    pub fn decode(&self, vb: &VarBuilder, decoder_input_ids: &Tensor, encoder_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let (d, heads, std) = (c.d_model, c.decoder_attention_heads, c.init_std);
        let dec = vb.pp("model.decoder");
        let h = self.embed(&dec, decoder_input_ids, c.image_vocab_size + 1, c.image_length, None)?;
        let self_bias = causal_bias(&h, decoder_input_ids.dim(1)?)?;
        let cross_bias = padding_bias(attention_mask)?;
        let model = self.clone();
        let layer: Rc<Layer> = Rc::new(move |l: &VarBuilder, h: &Tensor, x: &[Tensor]| {
            let (self_bias, cross_bias, encoder_states) = (&x[0], &x[1], &x[2]);
            model.decoder_layer(
                l,
                h,
                |a, y| attention(a, y, y, self_bias, d, heads, std, p),
                |a, y| attention(a, y, encoder_states, cross_bias, d, heads, std, p),
            )
        });
        let extras = [&self_bias, &cross_bias, encoder_states];
        let h = layer_stack(&dec.pp("layers"), c.decoder_layers, |i| format!("FlaxBartDecoderLayer_{i}"), self.stack_mode(), &h, &extras, layer)?;
        self.head(vb, &h)
    }

    /// Cross-attention keys and values of every decoder layer for the
    /// encoder states: computed once per caption, reused at every step.
    pub fn cross_attention_kv(&self, vb: &VarBuilder, encoder_states: &Tensor, attention_mask: &Tensor) -> Result<CrossAttentionKv> {
        let c = &self.config;
        let (mut keys, mut values) = (vec![], vec![]);
        for i in 0..c.decoder_layers {
            let a = vb.pp(&format!("model.decoder.layers.FlaxBartDecoderLayer_{i}.FlaxBartAttention_1"));
            keys.push(project_heads(&a.pp("k_proj"), encoder_states, c.d_model, c.decoder_attention_heads, c.init_std, self.precision)?);
            values.push(project_heads(&a.pp("v_proj"), encoder_states, c.d_model, c.decoder_attention_heads, c.init_std, self.precision)?);
        }
        Ok(CrossAttentionKv { keys, values, bias: padding_bias(attention_mask)? })
    }

    /// An empty self-attention cache for `batch` sequences.
    pub fn empty_cache(&self, g: &crate::graph::Graph, batch: i64) -> DecoderCache {
        let c = &self.config;
        let heads = c.decoder_attention_heads;
        let shape = [batch, heads, c.image_length, c.d_model / heads];
        let zeros = || (0..c.decoder_layers).map(|_| g.zeros(self.precision.compute, &shape)).collect();
        DecoderCache { keys: zeros(), values: zeros() }
    }

    /// One generation step: logits `[B, image_vocab_size + 1]` for the tokens
    /// `[B]` at image position `position` (i32 scalar), attending to the
    /// cached positions before it. The token's keys and values are written
    /// into `cache` at `position`.
    pub fn decode_step(&self, vb: &VarBuilder, tokens: &Tensor, position: &Tensor, cache: &mut DecoderCache, cross: &CrossAttentionKv) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let (d, heads, std) = (c.d_model, c.decoder_attention_heads, c.init_std);
        let b = tokens.dim(0)?;
        let dec = vb.pp("model.decoder");
        let mut h = self.embed(&dec, &tokens.reshape(&[b, 1])?, c.image_vocab_size + 1, c.image_length, Some(position))?;
        // Positions up to and including this one are visible.
        let g = tokens.graph();
        let visible = g.iota(DType::I32, &[c.image_length], 0)?.le(&position.broadcast_to(&[c.image_length])?)?;
        let step_bias = Tensor::select(&visible, &g.zeros(DType::F32, &[c.image_length]), &g.full(MASKED, DType::F32, &[c.image_length]))?
            .reshape(&[1, 1, 1, c.image_length])?;
        let zero = position.zeros_like()?;
        for i in 0..c.decoder_layers {
            let (cache_k, cache_v) = (&mut cache.keys[i], &mut cache.values[i]);
            h = self.decoder_layer(
                &dec.pp(&format!("layers.FlaxBartDecoderLayer_{i}")),
                &h,
                |a, x| {
                    let q = project_heads(&a.pp("q_proj"), x, d, heads, std, p)?;
                    let at = [&zero, &zero, position, &zero];
                    *cache_k = cache_k.dynamic_update_slice(&project_heads(&a.pp("k_proj"), x, d, heads, std, p)?, &at)?;
                    *cache_v = cache_v.dynamic_update_slice(&project_heads(&a.pp("v_proj"), x, d, heads, std, p)?, &at)?;
                    linear(&a.pp("out_proj"), &attend(&q, cache_k, cache_v, &step_bias, p)?, d, d, std, p)
                },
                |a, x| {
                    let q = project_heads(&a.pp("q_proj"), x, d, heads, std, p)?;
                    linear(&a.pp("out_proj"), &attend(&q, &cross.keys[i], &cross.values[i], &cross.bias, p)?, d, d, std, p)
                },
            )?;
        }
        self.head(vb, &h)?.reshape(&[b, c.image_vocab_size + 1])
    }

    /// Labels shifted right with the start token: the decoder's teacher-forcing input.
    pub fn shift_right(&self, labels: &Tensor) -> Result<Tensor> {
        let (b, t) = (labels.dim(0)?, labels.dim(1)?);
        let bos = labels.graph().full(self.config.bos_token() as f64, labels.dtype(), &[b, 1]);
        Tensor::concat(&[&bos, &labels.narrow(1, 0, t - 1)?], 1)
    }

    /// Logits for a caption and the image tokens (`labels`), teacher-forced.
    pub fn forward(&self, vb: &VarBuilder, input_ids: &Tensor, attention_mask: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let enc = self.encode(vb, input_ids, attention_mask)?;
        self.decode(vb, &self.shift_right(labels)?, &enc, attention_mask)
    }

    /// Mean softmax cross-entropy over all image positions.
    pub fn loss(&self, vb: &VarBuilder, input_ids: &Tensor, attention_mask: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let logits = self.forward(vb, input_ids, attention_mask, labels)?;
        crate::nn::cross_entropy(&logits, labels)
    }
}
