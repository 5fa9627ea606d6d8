//! How much memory training a VQGAN config takes, from the config alone
//! (checked arithmetic: absurd sizes are errors, never overflows).

use super::VqganTrainConfig;
use crate::error::{Error, Result};
use crate::runtime::memory::{checked_product, checked_sum_of_products, MemoryEstimate};

fn too_large() -> Error {
    Error::Invalid("the VQGAN is too large to estimate: its sizes overflow 64-bit arithmetic (check model.resolution, model.ch and model.ch_mult)".into())
}

/// Memory a training run of `config` needs on each of `replicas` devices:
/// a rough lower bound from the convolutions of every level.
pub fn training_memory(config: &VqganTrainConfig, replicas: usize) -> Result<MemoryEstimate> {
    let m = &config.model;
    let blocks = m.num_res_blocks as i64;
    let micro = (config.train.batch_size / replicas.max(1)).max(1) as i64;
    let mut params: u64 = checked_product(&[m.n_embed, m.embed_dim]).ok_or_else(too_large)?;
    let mut activations: u64 = 0;
    let mut side = m.resolution;
    for &mult in &m.ch_mult {
        let c = m.ch.checked_mul(mult).ok_or_else(too_large)?;
        // Encoder and decoder: (2 * blocks + 1) residual blocks of two 3x3 convolutions.
        let level_params = checked_product(&[2 * blocks + 1, 2, 9, c, c]).ok_or_else(too_large)?;
        params = params.checked_add(level_params).ok_or_else(too_large)?;
        // Feature maps kept for the backward pass: a few per convolution, encoder and decoder.
        let level_acts = checked_sum_of_products(&[&[micro, 2 * blocks + 2, 4, side, side, c]]).ok_or_else(too_large)?;
        activations = activations.checked_add(level_acts).ok_or_else(too_large)?;
        side = (side / 2).max(1);
    }
    let bytes = |n: u64, per: u64| n.checked_mul(per).ok_or_else(too_large);
    Ok(MemoryEstimate {
        parameters: params,
        per_device: vec![
            ("weights and gradients", bytes(params, 8)?),
            ("optimizer state", bytes(params, 8)?),
            ("activations", bytes(activations, 4)?),
        ],
        host: bytes(params, 8)?,
    })
}
