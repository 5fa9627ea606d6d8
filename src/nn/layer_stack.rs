//! A stack of identical layers, computed one of four ways with the same
//! parameters (same names, same shapes), so checkpoints do not depend on it:
//! - unrolled: every layer traced into the program (the default);
//! - rematerialised: unrolled, but the backward pass recomputes each layer
//!   from its input instead of keeping its intermediates;
//! - scanned: the per-layer weights are stacked into `[layers, ...]` arrays
//!   and one traced layer body runs in a loop over them, so the program (and
//!   its compile time) does not grow with depth. The loop stores each
//!   layer's input and matrix products for the backward pass, which
//!   recomputes the cheap rest (norms, activations, softmax) from them;
//! - scanned and rematerialised: the loop stores only each layer's input, and
//!   the backward pass recomputes the layer from it.
//!
//! Scanned stacks are recorded in the builder (`VarBuilder::record_stack`),
//! so that the optimizer updates them in a loop too.

use super::vars::{ParamSpec, VarBuilder};
use crate::graph::{fori_loop_storing, remat, Graph, Result, Stores, Tensor};
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackMode {
    Unrolled,
    Remat,
    Scan,
    ScanRemat,
}

/// A layer: its parameters' builder, the hidden state and the extra inputs
/// every layer reads (masks, encoder states); returns the new hidden state.
pub type Layer = dyn Fn(&VarBuilder, &Tensor, &[Tensor]) -> Result<Tensor>;

/// Runs `layers` layers over `h`; layer `i`'s parameters live under
/// `vb.pp(&name(i))`.
pub fn layer_stack(
    vb: &VarBuilder,
    layers: usize,
    name: impl Fn(usize) -> String,
    mode: StackMode,
    h: &Tensor,
    extras: &[&Tensor],
    layer: Rc<Layer>,
) -> Result<Tensor> {
    let extras: Vec<Tensor> = extras.iter().map(|t| (*t).clone()).collect();
    if mode == StackMode::Unrolled {
        let mut h = h.clone();
        for i in 0..layers {
            h = layer(&vb.pp(&name(i)), &h, &extras)?;
        }
        return Ok(h);
    }
    let specs = layer_params(vb, h, &extras, &*layer)?;
    let weights: Vec<Vec<Tensor>> = (0..layers)
        .map(|i| specs.iter().map(|s| vb.pp(&name(i)).get(&s.name, &s.ty.shape, s.init.clone())).collect())
        .collect::<Result<_>>()?;
    if matches!(mode, StackMode::Scan | StackMode::ScanRemat) {
        for s in &specs {
            vb.record_stack((0..layers).map(|i| vb.pp(&name(i)).path(&s.name)).collect());
        }
    }
    match mode {
        StackMode::Remat => remat_layers(vb, h, &extras, &specs, &weights, layer),
        // Without a backward pass there is nothing to store, nor a layer VJP to trace.
        _ if vb.is_forward_only() => scan_layers(vb, h, &extras, &specs, &weights, &*layer, Stores::Nothing),
        StackMode::ScanRemat => scan_layers(vb, h, &extras, &specs, &weights, &*layer, Stores::Carries),
        _ => scan_layers(vb, h, &extras, &specs, &weights, &*layer, Stores::Activations),
    }
}

/// The parameters one layer asks for (names relative to the layer), found
/// by tracing it once into a scratch graph.
fn layer_params(vb: &VarBuilder, h: &Tensor, extras: &[Tensor], layer: &Layer) -> Result<Vec<ParamSpec>> {
    let scratch = Graph::new("layer_params");
    let h = scratch.param("h", h.dtype(), h.shape());
    let extras: Vec<Tensor> = extras.iter().enumerate().map(|(k, e)| scratch.param(&format!("extra{k}"), e.dtype(), e.shape())).collect();
    let probe = VarBuilder::new(&scratch, vb.dtype());
    layer(&probe, &h, &extras)?;
    Ok(probe.specs())
}

/// The builder a layer body reads its weights from: `specs[k]` is `weights[k]`.
fn bound(graph: &Graph, vb: &VarBuilder, specs: &[ParamSpec], weights: &[Tensor]) -> VarBuilder {
    let l = VarBuilder::from_tensors(graph, vb.dtype(), specs.iter().map(|s| s.name.clone()).zip(weights.iter().cloned()));
    if vb.is_forward_only() {
        l.forward_only()
    } else {
        l
    }
}

fn remat_layers(vb: &VarBuilder, h: &Tensor, extras: &[Tensor], specs: &[ParamSpec], weights: &[Vec<Tensor>], layer: Rc<Layer>) -> Result<Tensor> {
    let mut h = h.clone();
    let (n_extras, specs) = (extras.len(), Rc::new(specs.to_vec()));
    for w in weights {
        let mut inputs: Vec<&Tensor> = vec![&h];
        inputs.extend(extras);
        inputs.extend(w);
        let (layer, specs, vb) = (layer.clone(), specs.clone(), vb.clone());
        let f = move |args: &[Tensor]| -> Result<Vec<Tensor>> {
            let l = bound(args[0].graph(), &vb, &specs, &args[1 + n_extras..]);
            Ok(vec![layer(&l, &args[0], &args[1..1 + n_extras])?])
        };
        h = remat(f, &inputs)?.remove(0);
    }
    Ok(h)
}

fn scan_layers(vb: &VarBuilder, h: &Tensor, extras: &[Tensor], specs: &[ParamSpec], weights: &[Vec<Tensor>], layer: &Layer, stores: Stores) -> Result<Tensor> {
    // [layers, ...] per parameter; the gradient of the stacking hands each
    // layer's slice back to its own parameter.
    let stacked: Vec<Tensor> = (0..specs.len()).map(|k| Tensor::stack(&weights.iter().map(|w| &w[k]).collect::<Vec<_>>())).collect::<Result<_>>()?;
    let mut carries: Vec<&Tensor> = vec![h];
    carries.extend(extras);
    carries.extend(&stacked);
    let n_extras = extras.len();
    // The training step's backward pass reads what the forward loop stored
    // instead of running the layers forward again.
    let out = fori_loop_storing(stores, 0, weights.len() as i64, &carries, |i, c| {
        let rows: Vec<Tensor> = c[1 + n_extras..].iter().map(|s| s.dynamic_index(i)).collect::<Result<_>>()?;
        let l = bound(i.graph(), vb, specs, &rows);
        let mut next = vec![layer(&l, &c[0], &c[1..1 + n_extras])?];
        // Masks, encoder states and weights pass through unchanged, which is
        // what keeps the loop's backward pass from storing them per layer.
        next.extend(c[1..].iter().cloned());
        Ok(next)
    })?;
    Ok(out[0].clone())
}
