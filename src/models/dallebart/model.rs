//! The DalleBart seq2seq model: BART with NormFormer layer norms and GLU
//! feed-forward blocks, reading a caption and writing image tokens.
//! Parameter names follow dalle-mini's flax tree, so its checkpoints map 1:1.

use super::config::DalleBartConfig;
use crate::graph::{Result, Tensor};
use crate::nn::{embedding, gelu, layer_norm, linear, Precision, VarBuilder};
use crate::DType;

const EPS: f64 = 1e-5;
/// Added to masked attention scores; finite so a fully masked row cannot make NaNs.
const MASKED: f64 = -1e9;

pub struct DalleBart {
    pub config: DalleBartConfig,
    pub precision: Precision,
}

/// Multi-head attention. `kv` is the sequence attended to; `bias` is added to
/// the scores `[B or 1, 1, Tq, Tk]`.
fn attention(vb: &VarBuilder, x: &Tensor, kv: &Tensor, bias: &Tensor, d: i64, heads: i64, std: f64, p: Precision) -> Result<Tensor> {
    let (b, tq, tk) = (x.dim(0)?, x.dim(1)?, kv.dim(1)?);
    let dh = d / heads;
    let split = |t: &Tensor, len: i64| t.reshape(&[b, len, heads, dh])?.transpose(&[0, 2, 1, 3]);
    let q = split(&linear(&vb.pp("q_proj"), x, d, d, std, p)?, tq)?;
    let k = split(&linear(&vb.pp("k_proj"), kv, d, d, std, p)?, tk)?;
    let v = split(&linear(&vb.pp("v_proj"), kv, d, d, std, p)?, tk)?;
    let q = q.scale(1.0 / (dh as f64).sqrt())?;
    let scores = q.dot_general(&k, &[0, 1], &[0, 1], &[3], &[3])?; // [B, H, Tq, Tk]
    let scores = scores.cast(DType::F32)?.add(bias)?;
    let weights = scores.softmax(-1)?.cast(p.compute)?;
    let out = weights.dot_general(&v, &[0, 1], &[0, 1], &[3], &[2])?; // [B, H, Tq, Dh]
    let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, tq, d])?;
    linear(&vb.pp("out_proj"), &out, d, d, std, p)
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

impl DalleBart {
    pub fn new(config: DalleBartConfig, precision: Precision) -> Self {
        DalleBart { config, precision }
    }

    fn embed(&self, vb: &VarBuilder, tokens_vb: &VarBuilder, ids: &Tensor, vocab: i64, positions: i64) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let mut x = embedding(tokens_vb, ids, vocab, c.d_model, c.init_std, p)?;
        if c.scale_embedding {
            x = x.scale((c.d_model as f64).sqrt())?;
        }
        let t = ids.dim(1)?;
        let table = vb.pp("embed_positions").get("embedding", &[positions, c.d_model], crate::nn::Init::Normal(c.init_std))?;
        let pos = p.weight(&table)?.narrow(0, 0, t)?;
        let x = x.add(&pos)?;
        layer_norm(&vb.pp("layernorm_embedding"), &x, c.d_model, true, true, EPS)
    }

    /// Encoder states `[B, T_text, d_model]` for `input_ids` and its keep-mask.
    pub fn encode(&self, vb: &VarBuilder, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let vb = vb.pp("model.encoder");
        let mut h = self.embed(&vb, &vb.pp("embed_tokens"), input_ids, c.encoder_vocab_size, c.max_text_length)?;
        let bias = padding_bias(attention_mask)?;
        for i in 0..c.encoder_layers {
            let l = vb.pp(&format!("layers.FlaxBartEncoderLayer_{i}"));
            let x = layer_norm(&l.pp("LayerNorm_0"), &h, c.d_model, false, true, EPS)?;
            let x = attention(&l.pp("FlaxBartAttention_0"), &x, &x, &bias, c.d_model, c.encoder_attention_heads, c.init_std, p)?;
            let x = layer_norm(&l.pp("LayerNorm_1"), &x, c.d_model, true, true, EPS)?;
            h = h.add(&x)?;
            h = h.add(&glu(&l.pp("GLU_0"), &h, c.d_model, c.encoder_ffn_dim, c.init_std, p)?)?;
        }
        if c.use_final_ln_encoder {
            h = layer_norm(&vb.pp("final_ln"), &h, c.d_model, false, true, EPS)?;
        }
        Ok(h)
    }

    /// Logits `[B, T_img, image_vocab_size + 1]` for decoder inputs given encoder states.
    pub fn decode(&self, vb: &VarBuilder, decoder_input_ids: &Tensor, encoder_states: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = self.precision;
        let dec = vb.pp("model.decoder");
        let mut h = self.embed(&dec, &dec.pp("embed_tokens"), decoder_input_ids, c.image_vocab_size + 1, c.image_length)?;
        let self_bias = causal_bias(&h, decoder_input_ids.dim(1)?)?;
        let cross_bias = padding_bias(attention_mask)?;
        for i in 0..c.decoder_layers {
            let l = dec.pp(&format!("layers.FlaxBartDecoderLayer_{i}"));
            let x = layer_norm(&l.pp("LayerNorm_0"), &h, c.d_model, false, true, EPS)?;
            let x = attention(&l.pp("FlaxBartAttention_0"), &x, &x, &self_bias, c.d_model, c.decoder_attention_heads, c.init_std, p)?;
            let x = layer_norm(&l.pp("LayerNorm_1"), &x, c.d_model, true, true, EPS)?;
            h = h.add(&x)?;
            let x = layer_norm(&l.pp("LayerNorm_2"), &h, c.d_model, false, true, EPS)?;
            let x = attention(&l.pp("FlaxBartAttention_1"), &x, encoder_states, &cross_bias, c.d_model, c.decoder_attention_heads, c.init_std, p)?;
            let x = layer_norm(&l.pp("LayerNorm_3"), &x, c.d_model, true, true, EPS)?;
            h = h.add(&x)?;
            h = h.add(&glu(&l.pp("GLU_0"), &h, c.d_model, c.decoder_ffn_dim, c.init_std, p)?)?;
        }
        if c.use_final_ln_decoder {
            h = layer_norm(&dec.pp("final_ln"), &h, c.d_model, false, true, EPS)?;
        }
        linear(&vb.pp("lm_head"), &h, c.d_model, c.image_vocab_size + 1, c.init_std, p)
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
