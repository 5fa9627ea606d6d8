//! How much memory training a DalleBart config takes, from the config alone
//! (checked arithmetic: absurd sizes are errors, never overflows).

use super::DalleBartConfig;
use crate::error::{Error, Result};
use crate::runtime::memory::{checked_sum_of_products, MemoryEstimate};
use super::TrainConfig;

fn too_large(what: &str) -> Error {
    Error::Invalid(format!("the model is too large to {what}: its sizes overflow 64-bit arithmetic (check model.d_model, the *_ffn_dim, vocabulary and length settings)"))
}

/// Parameters of `config`, counted from its sizes exactly as the model
/// declares them, or an error when the count overflows.
pub fn parameter_count(c: &DalleBartConfig) -> Result<u64> {
    let (d, el, dl) = (c.d_model, c.encoder_layers as i64, c.decoder_layers as i64);
    let image_rows = c.image_vocab_size.checked_add(1).ok_or_else(|| too_large("count its parameters"))?;
    let final_lns = i64::from(c.use_final_ln_encoder) + i64::from(c.use_final_ln_decoder);
    checked_sum_of_products(&[
        // Embeddings (tokens, positions, a LayerNorm with bias each): text, then image tokens with BOS.
        &[c.encoder_vocab_size, d],
        &[c.max_text_length, d],
        &[image_rows, d],
        &[c.image_length, d],
        &[4, d],
        // Encoder layers: self-attention (4 projections), three scale-only and one
        // biased LayerNorm, GLU feed-forward (3 projections, a LayerNorm over ffn).
        &[el, 4, d, d],
        &[el, 3, c.encoder_ffn_dim, d],
        &[el, 4, d],
        &[el, c.encoder_ffn_dim],
        // Decoder layers: self- and cross-attention, norms, GLU.
        &[dl, 8, d, d],
        &[dl, 3, c.decoder_ffn_dim, d],
        &[dl, 7, d],
        &[dl, c.decoder_ffn_dim],
        // Final LayerNorms (scale only) and lm_head.
        &[final_lns, d],
        &[image_rows, d],
    ])
    .filter(|&n| i64::try_from(n).is_ok())
    .ok_or_else(|| too_large("count its parameters"))
}

/// Memory a training run of `config` needs on each of `replicas` devices.
pub fn training_memory(config: &TrainConfig, replicas: usize) -> Result<MemoryEstimate> {
    let c = &config.model;
    let parameters = parameter_count(c)?;
    let overflow = || too_large("estimate its memory");
    let bytes = |n: u64, per: u64| n.checked_mul(per).ok_or_else(overflow);
    // Replicated weights: f32 master copy and gradients, optimizer moments,
    // and a bf16 copy for the forward pass when training in bf16.
    // Shampoo: three moments, plus statistics and preconditioners, 2·(a² + b²)
    // floats for an a x b block (16 bytes per weight for square blocks).
    let optimizer_per_param = match config.optimizer.kind.as_str() {
        "adamw" => 8,
        "shampoo" => 28,
        _ => 4,
    };
    let compute_copy = if config.train.dtype == "bf16" { 2 } else { 0 };
    // On a mesh each device keeps 1/devices of the weights and state (the
    // estimate is a lower bound) and the batch is split over the data axis.
    let (split, sharded_over) = match config.train.mesh {
        Some(m) => (m.data, m.devices().max(1) as u64),
        None => (replicas, 1),
    };
    let parameters_here = parameters.div_ceil(sharded_over);
    let micro = (config.train.batch_size / split.max(1) / config.train.gradient_accumulation.max(1)).max(1) as i64;
    let (d, t, l) = (c.d_model, c.max_text_length, c.image_length);
    let (el, dl) = (c.encoder_layers as i64, c.decoder_layers as i64);
    let image_rows = c.image_vocab_size.saturating_add(1);
    // Activations kept for the backward pass, as f32 values.
    let activations = checked_sum_of_products(&[
        &[micro, el, t, 12, d],
        &[micro, el, t, 2, c.encoder_ffn_dim],
        &[micro, el, c.encoder_attention_heads, t, t],
        &[micro, dl, l, 16, d],
        &[micro, dl, l, 2, c.decoder_ffn_dim],
        &[micro, dl, c.decoder_attention_heads, l, l],
        &[micro, dl, c.decoder_attention_heads, l, t],
        &[micro, l, 3, image_rows],
    ])
    .ok_or_else(overflow)?;
    Ok(MemoryEstimate {
        parameters,
        per_device: vec![
            ("weights and gradients", bytes(parameters_here, 8 + compute_copy)?),
            ("optimizer state", bytes(parameters_here, optimizer_per_param)?),
            ("activations", bytes(activations, 4)?),
        ],
        host: bytes(parameters, 8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_matches_the_model_graph_and_overflow_is_an_error() {
        for config in [DalleBartConfig::tiny(), DalleBartConfig::mini()] {
            let from_graph: i64 = super::super::parameter_specs(&config).unwrap().iter().map(|s| s.ty.numel()).sum();
            assert_eq!(parameter_count(&config).unwrap(), from_graph as u64);
        }
        let huge = DalleBartConfig { d_model: 4_000_000_000, ..DalleBartConfig::tiny() };
        assert!(parameter_count(&huge).unwrap_err().to_string().contains("too large"));
    }
}
