//! The parameter tree of a DalleBart config, found by building its graph once
//! (no compilation): names, shapes and initialisers come from the model code.

use super::{DalleBart, DalleBartConfig};
use crate::graph::{Graph, Result};
use crate::nn::{ParamSpec, Precision, VarBuilder};
use crate::DType;

/// Every parameter of the model, in the order the model asks for them.
pub fn parameter_specs(config: &DalleBartConfig) -> Result<Vec<ParamSpec>> {
    let g = Graph::new("parameters");
    let ids = g.param("input_ids", DType::I32, &[1, config.max_text_length]);
    let mask = g.param("attention_mask", DType::I32, &[1, config.max_text_length]);
    let labels = g.param("labels", DType::I32, &[1, config.image_length]);
    let vb = VarBuilder::new(&g, DType::F32).forward_only();
    DalleBart::new(config.clone(), Precision::f32()).loss(&vb, &ids, &mask, &labels)?;
    Ok(vb.specs())
}

/// Parameter counts of the encoder, the decoder and the `lm_head`.
pub fn parameter_groups(config: &DalleBartConfig) -> Result<Vec<(&'static str, i64)>> {
    let mut groups = vec![("encoder", 0), ("decoder", 0), ("lm_head", 0)];
    for spec in parameter_specs(config)? {
        let group = if spec.name.starts_with("model.encoder.") {
            0
        } else if spec.name.starts_with("model.decoder.") {
            1
        } else {
            2
        };
        groups[group].1 += spec.ty.numel();
    }
    Ok(groups)
}
