//! Restoring a model from a checkpoint as its tensors arrive.
//!
//! [`super::RunDir::resume`] reads a checkpoint as a stream of verified
//! tensors ([`crate::checkpoint::TensorStream`]) and hands each to the
//! model's [`RestoreSink`] as it comes, so a model that uploads them at once
//! never holds the whole checkpoint on the host (for mega with Shampoo, 80 GiB).

use super::Trainable;
use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::error::Result;
use crate::host::HostTensor;

/// Takes one checkpoint's tensors, each once and in any order, then its step
/// and run state. Until [`RestoreSink::finish`] the model keeps its state: a
/// checkpoint found corrupt halfway is dropped, and the previous one restored.
pub trait RestoreSink {
    fn put(&mut self, name: &str, tensor: &HostTensor) -> Result<()>;
    fn finish(self: Box<Self>, step: u64, meta: &CheckpointMeta) -> Result<()>;
}

/// The sink of a model that restores from a whole [`Checkpoint`]: it
/// gathers the tensors, then calls [`Trainable::restore`].
pub struct WholeCheckpoint<'a, M: Trainable + ?Sized> {
    pub model: &'a mut M,
    pub tensors: Vec<(String, HostTensor)>,
}

impl<M: Trainable + ?Sized> RestoreSink for WholeCheckpoint<'_, M> {
    fn put(&mut self, name: &str, tensor: &HostTensor) -> Result<()> {
        self.tensors.push((name.to_string(), tensor.clone()));
        Ok(())
    }

    fn finish(self: Box<Self>, step: u64, meta: &CheckpointMeta) -> Result<()> {
        let WholeCheckpoint { model, tensors } = *self;
        // In the model's order, as a checkpoint read whole lists them.
        let mut by_name: std::collections::HashMap<String, HostTensor> = tensors.into_iter().collect();
        let tensors = model.tensor_types().into_iter().filter_map(|(name, _)| by_name.remove(&name).map(|t| (name, t))).collect();
        model.restore(&Checkpoint { step, tensors, meta: meta.clone() })
    }
}
