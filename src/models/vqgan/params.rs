//! The VQGAN parameter tree of a config, found by building its graph once.

use super::{Vqgan, VqganConfig};
use crate::graph::{Graph, Result};
use crate::nn::{ParamSpec, VarBuilder};
use crate::DType;

/// Every autoencoder parameter, in the order the model asks for them.
pub fn parameter_specs(config: &VqganConfig) -> Result<Vec<ParamSpec>> {
    let g = Graph::new("vqgan_parameters");
    let r = config.resolution;
    let images = g.param("images", DType::F32, &[1, r, r, config.in_channels]);
    let vb = VarBuilder::new(&g, DType::F32);
    Vqgan::new(config.clone()).reconstruct(&vb, &images)?;
    Ok(vb.specs())
}
