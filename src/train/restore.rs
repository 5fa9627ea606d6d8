//! Restoring a model from a checkpoint as its tensors arrive.
//!
//! [`super::RunDir::resume`] reads a checkpoint as a stream of verified
//! tensors ([`crate::checkpoint::TensorStream`]) and hands each to the
//! model's [`RestoreSink`] as it comes, so a model that uploads them at once
//! never holds the whole checkpoint on the host (for mega with Shampoo, 80 GiB).

use super::Trainable;
use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::error::{Error, Result};
use crate::host::HostTensor;

/// Takes one checkpoint's tensors, each once and in any order, then its step
/// and run state. A model may let its current state go when the sink is made
/// (DalleBart frees its device buffers, so a device never holds two states):
/// a checkpoint found corrupt halfway is then dropped with its sink, and the
/// previous one restored through a new sink.
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
        let mut ordered = Vec::with_capacity(by_name.len());
        for (name, _) in model.tensor_types() {
            let tensor = by_name.remove(&name).ok_or_else(|| Error::Invalid(format!("checkpoint step {step} has no tensor '{name}'")))?;
            ordered.push((name, tensor));
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(Error::Invalid(format!("checkpoint step {step} has tensor '{extra}' that the model does not")));
        }
        model.restore(&Checkpoint { step, tensors: ordered, meta: meta.clone() })
    }
}
