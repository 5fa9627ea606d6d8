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
use crate::runtime::Program;
use std::collections::{BTreeMap, HashMap};

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
        let params = self.params.iter().map(|p| p.init.sample(seed, &p.name, p.ty.dtype, &p.ty.shape)).collect();
        self.starting_from(params)
    }

    /// `params` (in [`Self::params`] order, e.g. pretrained weights) with the
    /// optimizer state at its start.
    pub fn starting_from(&self, params: Vec<HostTensor>) -> Vec<HostTensor> {
        params.into_iter().chain(self.state.iter().map(|(_, s)| s.initial_value())).collect()
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

    /// Splits each device's outputs of an update program into the updated
    /// state (the first [`Self::len`]) and what follows it. The first output
    /// after the state is a vector of statistics: device 0's is read into
    /// `stats` under `stat_names`; the outputs after it are returned per device.
    pub fn take_updated(&self, outputs: Vec<Vec<Buffer>>, stat_names: &[&str], stats: &mut BTreeMap<String, f64>) -> Result<(Vec<Vec<Buffer>>, Vec<Vec<Buffer>>)> {
        let mut state = Vec::with_capacity(outputs.len());
        let mut rest = Vec::with_capacity(outputs.len());
        for (d, mut out) in outputs.into_iter().enumerate() {
            let mut tail = out.split_off(self.len().min(out.len()));
            if tail.is_empty() {
                return Err(Error::Invalid(format!("an update program returned {} outputs on device {d}, expected its {} state tensors and statistics", out.len(), self.len())));
            }
            let statistics = tail.remove(0);
            if d == 0 {
                stats.extend(stat_names.iter().map(|n| n.to_string()).zip(crate::runtime::download(&statistics)?.to_f64_vec()));
            }
            state.push(out);
            rest.push(tail);
        }
        Ok((state, rest))
    }
}

/// Each device's `[learning rate, update count]`, the inputs every update
/// program ends with, for the update after `step` updates.
pub fn update_scalars(program: &Program, replicas: usize, lr: f64, step: u64) -> Result<Vec<Vec<Buffer>>> {
    let (lr, count) = (HostTensor::scalar(lr as f32), HostTensor::scalar((step + 1) as f32));
    (0..replicas).map(|d| program.upload(d, &[&lr, &count])).collect()
}

