//! The device mesh (`train.mesh: {data: D, model: M}`) and where each tensor
//! lives on it.
//!
//! A training step on a mesh is one SPMD program over all `D x M` devices:
//! the graph is written for the global batch and the whole parameters, and
//! each argument carries a GSPMD sharding annotation; XLA inserts the
//! gathers and reduce-scatters. The batch is split over `data`. Every
//! parameter, gradient and optimizer-state tensor is split over `data` along
//! its largest evenly divisible dimension (fully sharded data parallel), and
//! over `model` along the dimension the model's partition rules name (tensor
//! model parallelism). Device `d` of the program sits at data index `d / M`
//! and model index `d % M`.
//!
//! On the host a tensor is cut into its shards for upload; on download one
//! copy of each distinct shard is kept and checkpoints are written from them
//! in the whole tensor's byte order, so checkpoints hold whole tensors
//! whatever the mesh, and a run saved on one mesh resumes on another.

use crate::host::{block_runs, HostTensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    pub data: usize,
    #[serde(default = "one")]
    pub model: usize,
}

fn one() -> usize {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Data,
    Model,
}

impl Mesh {
    pub fn devices(&self) -> usize {
        self.data * self.model
    }

    fn size(&self, axis: Axis) -> usize {
        match axis {
            Axis::Data => self.data,
            Axis::Model => self.model,
        }
    }

    /// (data index, model index) of program device `d`.
    fn coordinates(&self, d: usize) -> (usize, usize) {
        (d / self.model, d % self.model)
    }

    fn index(&self, d: usize, axis: Axis) -> usize {
        let (data, model) = self.coordinates(d);
        match axis {
            Axis::Data => data,
            Axis::Model => model,
        }
    }

    /// Checks the mesh against the devices a run trains on.
    pub fn validate(&self, devices: usize) -> Result<(), String> {
        if self.data == 0 || self.model == 0 {
            return Err(format!("train.mesh {{data: {}, model: {}}}: both axes must be at least 1", self.data, self.model));
        }
        if self.devices() != devices {
            return Err(format!(
                "train.mesh {{data: {}, model: {}}} has {} devices but the run trains on {devices}: the axes must multiply to the device count",
                self.data,
                self.model,
                self.devices()
            ));
        }
        Ok(())
    }
}

/// Which mesh axis, if any, splits each dimension of a tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub dims: Vec<Option<Axis>>,
}

impl Placement {
    pub fn replicated(rank: usize) -> Placement {
        Placement { dims: vec![None; rank] }
    }

    /// `model_dim` (from the model's partition rules) split over `model`, and
    /// the largest other dimension that `data` divides split over `data`
    /// (none: the tensor is replicated over `data`). `name` is for the error
    /// when `model` does not divide the named dimension.
    pub fn sharded(name: &str, shape: &[i64], model_dim: Option<usize>, mesh: &Mesh) -> Result<Placement, String> {
        let mut dims = vec![None; shape.len()];
        if mesh.model > 1 {
            if let Some(k) = model_dim {
                if shape[k] % mesh.model as i64 != 0 {
                    return Err(format!(
                        "tensor '{name}' {shape:?}: dimension {k} ({}) is not divisible by the mesh's model axis ({})",
                        shape[k], mesh.model
                    ));
                }
                dims[k] = Some(Axis::Model);
            }
        }
        if mesh.data > 1 {
            if let Some(k) = largest_divisible(shape, mesh.data, |k| dims[k].is_none()) {
                dims[k] = Some(Axis::Data);
            }
        }
        Ok(Placement { dims })
    }

    /// A tensor no partition rule names (optimizer state shaped unlike its
    /// parameter: Shampoo's statistics, Adafactor's factors): its largest
    /// dimension `model` divides goes over `model`, so it spreads over every
    /// device rather than only over `data`; then as [`Placement::sharded`].
    pub fn spread(name: &str, shape: &[i64], mesh: &Mesh) -> Result<Placement, String> {
        let model_dim = if mesh.model > 1 { largest_divisible(shape, mesh.model, |_| true) } else { None };
        Placement::sharded(name, shape, model_dim, mesh)
    }

    /// The shape of one device's shard of a tensor of `shape`.
    pub fn shard_shape(&self, shape: &[i64], mesh: &Mesh) -> Vec<i64> {
        shape.iter().zip(&self.dims).map(|(&n, a)| a.map_or(n, |a| n / mesh.size(a) as i64)).collect()
    }

    /// The GSPMD annotation (`mhlo.sharding`) of this placement.
    pub fn sharding(&self, mesh: &Mesh) -> String {
        let used: Vec<Axis> = self.dims.iter().flatten().copied().collect();
        if used.is_empty() {
            return "{replicated}".into();
        }
        let mut tiles: Vec<usize> = self.dims.iter().map(|a| a.map_or(1, |a| mesh.size(a))).collect();
        let unused: Vec<Axis> = [Axis::Data, Axis::Model].into_iter().filter(|a| !used.contains(a) && mesh.size(*a) > 1).collect();
        let replicas: usize = unused.iter().map(|a| mesh.size(*a)).product();
        if replicas > 1 {
            tiles.push(replicas);
        }
        // The device at each tile coordinate, in row-major order of the tiles.
        let mut devices = Vec::with_capacity(mesh.devices());
        let total: usize = tiles.iter().product();
        for flat in 0..total {
            let mut rest = flat;
            let mut coordinate = vec![0; tiles.len()];
            for k in (0..tiles.len()).rev() {
                coordinate[k] = rest % tiles[k];
                rest /= tiles[k];
            }
            let (mut data, mut model) = (0, 0);
            for (k, axis) in self.dims.iter().enumerate() {
                match axis {
                    Some(Axis::Data) => data = coordinate[k],
                    Some(Axis::Model) => model = coordinate[k],
                    None => {}
                }
            }
            if replicas > 1 {
                match unused.as_slice() {
                    [Axis::Data] => data = coordinate[tiles.len() - 1],
                    [Axis::Model] => model = coordinate[tiles.len() - 1],
                    _ => unreachable!("at least one axis is used"),
                }
            }
            devices.push((data * mesh.model + model).to_string());
        }
        let tiles: Vec<String> = tiles.iter().map(|t| t.to_string()).collect();
        let replicate = if replicas > 1 { " last_tile_dim_replicate" } else { "" };
        format!("{{devices=[{}]{}{replicate}}}", tiles.join(","), devices.join(","))
    }

    /// Where device `d`'s block of `block` shape starts in the whole tensor.
    fn block_start(&self, block: &[i64], mesh: &Mesh, d: usize) -> Vec<i64> {
        self.dims.iter().zip(block).map(|(a, &n)| a.map_or(0, |a| mesh.index(d, a) as i64 * n)).collect()
    }

    /// The block of `full` that device `d` holds.
    pub fn shard(&self, full: &HostTensor, mesh: &Mesh, d: usize) -> HostTensor {
        let shape = self.shard_shape(&full.shape, mesh);
        let start = self.block_start(&shape, mesh, d);
        let mut out = HostTensor::zeros(full.dtype, &shape);
        for (at_full, at_part, len) in block_runs(&full.shape, &shape, &start, full.dtype.size_in_bytes()) {
            out.data[at_part..at_part + len].copy_from_slice(&full.data[at_full..at_full + len]);
        }
        out
    }

    /// The devices that together hold one copy of a tensor of `shape` (the
    /// first device holding each block), with where their blocks start.
    pub fn block_holders(&self, shape: &[i64], mesh: &Mesh) -> Vec<(usize, Vec<i64>)> {
        let block = self.shard_shape(shape, mesh);
        let mut holders: Vec<(usize, Vec<i64>)> = Vec::new();
        for d in 0..mesh.devices() {
            let start = self.block_start(&block, mesh, d);
            if !holders.iter().any(|(_, seen)| *seen == start) {
                holders.push((d, start));
            }
        }
        holders
    }
}

/// The largest dimension of `shape` that `n` divides among those `free`
/// allows (the first of equal ones).
fn largest_divisible(shape: &[i64], n: usize, free: impl Fn(usize) -> bool) -> Option<usize> {
    (0..shape.len()).filter(|&k| free(k) && shape[k] % n as i64 == 0).max_by_key(|&k| (shape[k], usize::MAX - k))
}
