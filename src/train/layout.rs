//! What a trainer keeps on its devices: a network's parameters, then their
//! optimizer state, in checkpoint order. Every trainer (DalleBart, the VQGAN's
//! generator and discriminator, CLIP) names, checks, initialises, restores
//! and downloads its tensors through it.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::host::HostTensor;
use crate::nn::ParamSpec;
use crate::optim::StateSpec;
use crate::pjrt::Buffer;
use std::collections::HashMap;

/// One optimised network's parameters and optimizer state.
#[derive(Clone, Debug)]
pub struct NetLayout {
    pub params: Vec<ParamSpec>,
    pub state: Vec<(String, StateSpec)>,
}

impl NetLayout {
    /// Names of parameters then `<param>/<suffix>` state, the checkpoint order.
    pub fn names(&self) -> Vec<String> {
        let params = self.params.iter().map(|p| p.name.clone());
        params.chain(self.state.iter().map(|(p, s)| format!("{p}/{}", s.suffix))).collect()
    }

    pub fn len(&self) -> usize {
        self.params.len() + self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Types in [`Self::names`] order.
    pub fn types(&self) -> impl Iterator<Item = &TensorType> {
        self.params.iter().map(|p| &p.ty).chain(self.state.iter().map(|(_, s)| &s.ty))
    }

    /// Names under `prefix` and types: what a checkpoint of this net holds.
    pub fn tensor_types(&self, prefix: &str) -> Vec<(String, TensorType)> {
        self.names().into_iter().map(|n| format!("{prefix}{n}")).zip(self.types().cloned()).collect()
    }

    /// A fresh net: parameters drawn from their initialisers with `seed`,
    /// optimizer state at its start.
    pub fn initial_values(&self, seed: u64) -> Vec<HostTensor> {
        let params = self.params.iter().map(|p| p.init.sample(seed, &p.name, p.ty.dtype, &p.ty.shape));
        params.chain(self.state.iter().map(|(_, s)| s.initial_value())).collect()
    }

    /// This net's tensors in `checkpoint` (named under `prefix`), borrowed,
    /// in [`Self::names`] order.
    pub fn pick<'a>(&self, checkpoint: &'a Checkpoint, prefix: &str) -> Result<Vec<&'a HostTensor>> {
        let by_name: HashMap<&str, &HostTensor> = checkpoint.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.names()
            .iter()
            .map(|n| {
                let key = format!("{prefix}{n}");
                by_name.get(key.as_str()).copied().ok_or_else(|| Error::Invalid(format!("the checkpoint has no tensor '{key}'")))
            })
            .collect()
    }

    /// Checks that `values` are this net's tensors (count, dtypes, shapes);
    /// `what` names the net in the error.
    pub fn check(&self, values: &[&HostTensor], what: &str) -> Result<()> {
        let names = self.names();
        if names.len() != values.len() {
            return Err(Error::Invalid(format!("the {what} has {} tensors, got {}", names.len(), values.len())));
        }
        for ((name, want), got) in names.iter().zip(self.types()).zip(values) {
            if want.dtype != got.dtype || want.shape != got.shape {
                return Err(Error::Invalid(format!("'{name}' must be {want}, got {}{:?}", got.dtype, got.shape)));
            }
        }
        Ok(())
    }

    /// One device's `buffers` (in [`Self::names`] order) on the host, named under `prefix`.
    pub fn download(&self, buffers: &[Buffer], prefix: &str) -> Result<Vec<(String, HostTensor)>> {
        self.names().into_iter().zip(buffers).map(|(n, b)| Ok((format!("{prefix}{n}"), crate::runtime::download(b)?))).collect()
    }
}

