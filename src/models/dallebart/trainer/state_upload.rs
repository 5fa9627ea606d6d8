//! Putting the training state on the devices one tensor at a time, each
//! device getting its shard on a mesh: for fresh weights, and for a restore
//! that uploads tensors as a checkpoint stream delivers them.

use super::super::steps::{accumulator_names, StepPrograms};
use super::Trainer;
use crate::checkpoint::CheckpointMeta;
use crate::data::DataPosition;
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::host::HostTensor;
use crate::pjrt::Buffer;
use crate::train::RestoreSink;
use std::collections::HashMap;
use std::sync::Arc;

/// The device buffers of every value of the training state, filled in any
/// order; the state on the devices changes only when it is complete.
pub(super) struct StateUpload {
    programs: Arc<StepPrograms>,
    replicas: usize,
    names: Vec<String>,
    /// Position of each name in `names`.
    index: HashMap<String, usize>,
    types: Vec<TensorType>,
    /// Per value (in [`crate::train::NetLayout::names`] order): its buffer on each device.
    uploaded: Vec<Option<Vec<Buffer>>>,
}

impl StateUpload {
    pub(super) fn new(trainer: &Trainer) -> StateUpload {
        let layout = &trainer.programs.layout;
        let (names, types) = (layout.names(), layout.types().cloned().collect());
        let uploaded = names.iter().map(|_| None).collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        StateUpload { programs: trainer.programs.clone(), replicas: trainer.replicas, names, index, types, uploaded }
    }

    /// [`Self::put`] by the value's name.
    pub(super) fn put_named(&mut self, name: &str, value: &HostTensor) -> Result<()> {
        let index = *self.index.get(name).ok_or_else(|| Error::Invalid(format!("the checkpoint's tensor '{name}' is not part of the DalleBart training state")))?;
        self.put(index, value)
    }

    /// Uploads value `index` of the layout: whole to every device, or each
    /// device's shard of it on a mesh.
    pub(super) fn put(&mut self, index: usize, value: &HostTensor) -> Result<()> {
        let (name, want) = (&self.names[index], &self.types[index]);
        if want.dtype != value.dtype || want.shape != value.shape {
            return Err(Error::Invalid(format!("'{name}' must be {want}, got {}{:?}", value.dtype, value.shape)));
        }
        if self.uploaded[index].is_some() {
            return Err(Error::Invalid(format!("'{name}' was given twice")));
        }
        self.uploaded[index] = Some(self.upload(name, value)?);
        Ok(())
    }

    fn upload(&self, name: &str, value: &HostTensor) -> Result<Vec<Buffer>> {
        let program = self.programs.uploader();
        (0..self.replicas)
            .map(|d| {
                let mut buffers = match &self.programs.mesh {
                    None => program.upload(d, &[value])?,
                    Some(mesh) => program.upload(d, &[&mesh.of(name, &value.shape)?.shard(value, &mesh.mesh, d)])?,
                };
                Ok(buffers.remove(0))
            })
            .collect()
    }

    /// Per device: every value, then (with gradient accumulation) zeroed accumulators.
    pub(super) fn finish(self) -> Result<Vec<Vec<Buffer>>> {
        if let Some((name, _)) = self.names.iter().zip(&self.uploaded).find(|(_, buffers)| buffers.is_none()) {
            return Err(Error::Invalid(format!("the training state lacks '{name}'")));
        }
        // One zero tensor on the host at a time, not all of them.
        let mut accumulators = Vec::new();
        if self.programs.accumulate.is_some() {
            let params = &self.programs.layout.params;
            let zeros = params.iter().map(|p| HostTensor::zeros(p.ty.dtype, &p.ty.shape)).chain([HostTensor::scalar(0f32)]);
            for (name, zero) in accumulator_names(params).iter().zip(zeros) {
                accumulators.push(self.upload(name, &zero)?);
            }
        }
        let mut columns: Vec<std::vec::IntoIter<Buffer>> =
            self.uploaded.into_iter().flatten().chain(accumulators).map(|buffers| buffers.into_iter()).collect();
        Ok((0..self.replicas).map(|_| columns.iter_mut().map(|c| c.next().expect("a buffer per device")).collect()).collect())
    }
}

/// A restore of DalleBart's training state as the checkpoint's tensors
/// arrive: each is uploaded and dropped, so the host holds one at a time.
/// The trainer's previous state left the devices when the restore began
/// (see [`Trainer::restore_sink`](crate::train::Trainable::restore_sink)).
pub(super) struct StreamingRestore<'a> {
    pub(super) trainer: &'a mut Trainer,
    pub(super) upload: StateUpload,
}

impl RestoreSink for StreamingRestore<'_> {
    fn put(&mut self, name: &str, tensor: &HostTensor) -> Result<()> {
        self.upload.put_named(name, tensor)
    }

    fn finish(self: Box<Self>, step: u64, meta: &CheckpointMeta) -> Result<()> {
        let StreamingRestore { trainer, upload } = *self;
        let position: DataPosition =
            serde_json::from_value(meta.data_position.clone()).map_err(|e| Error::Invalid(format!("the checkpoint's data position is unreadable: {e}")))?;
        trainer.device_state = upload.finish()?;
        trainer.train_data.restart_with(trainer.dataset.train_loader(Some(&position))?);
        trainer.trained_position = position;
        trainer.step = step;
        trainer.samples_seen = meta.samples_seen;
        Ok(())
    }
}
