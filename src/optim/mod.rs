//! Optimizers as graph functions over (parameter, gradient, state), and
//! learning-rate schedules evaluated on the host each step.
//!
//! An optimizer declares the state it keeps per parameter and builds the
//! update for one parameter; the train step applies it to every parameter.
//! Distributed Shampoo fits the same interface (per-parameter statistics
//! and preconditioners as state).

mod adafactor;
mod adamw;
mod clip;
mod layer_loop;
mod schedule;
mod shampoo;

pub use adafactor::Adafactor;
pub use adamw::AdamW;
pub use clip::clip_by_global_norm;
pub use schedule::{Decay, Schedule};
pub use shampoo::{inverse_pth_root, inverse_pth_roots, inverse_pth_roots_in_chunks, Graft, Shampoo};

use crate::graph::{Result, Tensor, TensorType};
use crate::HostTensor;
use serde::{Deserialize, Serialize};

/// One state tensor an optimizer keeps for a parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    /// Appended to the parameter name: `<param>/<suffix>`.
    pub suffix: String,
    pub ty: TensorType,
    pub init: StateInit,
}

/// The value a state tensor starts from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StateInit {
    Zeros,
    /// `scale * I` for a square matrix or each of a stack of them (Shampoo's
    /// statistics and preconditioners).
    Identity(f64),
}

impl StateSpec {
    pub fn zeros(suffix: impl Into<String>, ty: TensorType) -> StateSpec {
        StateSpec { suffix: suffix.into(), ty, init: StateInit::Zeros }
    }

    /// The tensor a fresh run starts this state from.
    pub fn initial_value(&self) -> HostTensor {
        match self.init {
            StateInit::Zeros => HostTensor::zeros(self.ty.dtype, &self.ty.shape),
            StateInit::Identity(scale) => {
                let shape = &self.ty.shape;
                let n = shape.last().copied().unwrap_or(0) as usize;
                assert!(shape.len() >= 2 && shape[shape.len() - 2] == n as i64, "identity state '{}' must be square matrices, is {:?}", self.suffix, shape);
                let count = self.ty.numel() as usize;
                let values: Vec<f64> = (0..count).map(|k| if k % (n * n) % (n + 1) == 0 { scale } else { 0.0 }).collect();
                HostTensor::from_f64(self.ty.dtype, shape, &values).expect("identity state")
            }
        }
    }
}

/// Scalars of one step, fed from the host.
pub struct StepScalars<'a> {
    /// Learning rate of this step (f32 scalar).
    pub lr: &'a Tensor,
    /// 1-based update count (f32 scalar).
    pub count: &'a Tensor,
    /// Devices one SPMD program of the step spans (1 without a mesh): an
    /// optimizer may spread batched work of its own over them (Shampoo's
    /// inverse roots).
    pub partitions: usize,
}

pub trait Optimizer {
    fn name(&self) -> &'static str;
    /// State kept for a parameter of type `param`; a fresh run starts each
    /// from [`StateSpec::initial_value`].
    fn state(&self, param: &TensorType) -> Vec<StateSpec>;
    /// New parameter and state from the parameter, its gradient and state.
    fn update(&self, param: &Tensor, grad: &Tensor, state: &[Tensor], s: &StepScalars) -> Result<(Tensor, Vec<Tensor>)>;
    /// Every parameter's [`update`](Optimizer::update), in parameter order.
    /// Trainers call this. `stacks` lists the tensors of scanned layer
    /// stacks (indices of one tensor of every layer, in layer order), which
    /// are updated in one loop per stack so that the program does not grow
    /// with depth. An optimizer whose step is cheaper over all parameters
    /// together overrides it (Shampoo stacks every parameter's inverse roots
    /// into one loop).
    fn update_all(&self, params: &[Tensor], grads: &[Tensor], states: &[Vec<Tensor>], s: &StepScalars, stacks: &[Vec<usize>]) -> Result<Vec<(Tensor, Vec<Tensor>)>> {
        layer_loop::update_all_with_stacks(params, grads, states, s, stacks, |p, g, st, sc| self.update(p, g, st, sc))
    }
}

/// The optimizer section of a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `adamw`, `adafactor` or `shampoo`.
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global-norm gradient clipping; 0 disables it.
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    #[serde(default)]
    pub schedule: Schedule,
    /// Shampoo: largest side of a preconditioned block.
    #[serde(default = "default_block_size")]
    pub block_size: i64,
    /// Shampoo: steps between preconditioner refreshes.
    #[serde(default = "default_preconditioning_compute_steps")]
    pub preconditioning_compute_steps: i64,
    /// Shampoo: first (0-based) step that uses the preconditioners; unset,
    /// dalle-mini's `max(preconditioning_compute_steps + 1, 101)`.
    #[serde(default)]
    pub start_preconditioning_step: Option<i64>,
    /// Shampoo: parameters with a dimension over this use grafting alone.
    #[serde(default = "default_skip_dim")]
    pub skip_preconditioning_dim_size_gt: i64,
    /// Shampoo: the step size's source, `rmsprop_normalized` or `rmsprop`.
    #[serde(default = "default_graft")]
    pub graft: String,
    /// Shampoo: Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Shampoo: MiB of statistics the preconditioner refresh inverts at a
    /// time. Lower bounds the refresh's memory; higher batches more matrices
    /// per iteration.
    #[serde(default = "default_refresh_chunk_mib")]
    pub refresh_chunk_mib: f64,
}

fn default_kind() -> String {
    "adafactor".into()
}
fn default_lr() -> f64 {
    0.005
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_clip() -> f64 {
    1.0
}
fn default_block_size() -> i64 {
    1024
}
fn default_preconditioning_compute_steps() -> i64 {
    10
}
fn default_skip_dim() -> i64 {
    4096
}
fn default_refresh_chunk_mib() -> f64 {
    64.0
}
fn default_graft() -> String {
    "rmsprop_normalized".into()
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults")
    }
}

impl OptimizerConfig {
    pub fn build(&self) -> std::result::Result<Box<dyn Optimizer>, String> {
        match self.kind.as_str() {
            "adamw" => Ok(Box::new(AdamW { beta1: self.beta1, beta2: self.beta2, eps: self.eps, weight_decay: self.weight_decay })),
            "adafactor" => Ok(Box::new(Adafactor { weight_decay: self.weight_decay, ..Adafactor::default() })),
            "shampoo" => Ok(Box::new(self.shampoo()?)),
            other => Err(format!("optimizer.kind '{other}' is not one of: adamw, adafactor, shampoo")),
        }
    }

    /// Shampoo with dalle-mini's fixed settings and this config's choices.
    pub fn shampoo(&self) -> std::result::Result<Shampoo, String> {
        let positive = |key: &str, v: i64| if v >= 1 { Ok(()) } else { Err(format!("optimizer.{key} must be >= 1, got {v}")) };
        positive("block_size", self.block_size)?;
        positive("preconditioning_compute_steps", self.preconditioning_compute_steps)?;
        positive("skip_preconditioning_dim_size_gt", self.skip_preconditioning_dim_size_gt)?;
        let start = self.start_preconditioning_step.unwrap_or((self.preconditioning_compute_steps + 1).max(101));
        if start < 0 {
            return Err(format!("optimizer.start_preconditioning_step must be >= 0, got {start}"));
        }
        let graft = match self.graft.as_str() {
            "rmsprop_normalized" => Graft::RmspropNormalized,
            "rmsprop" => Graft::Rmsprop,
            other => return Err(format!("optimizer.graft '{other}' is not one of: rmsprop_normalized, rmsprop")),
        };
        for (key, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("optimizer.{key} must be in [0, 1], got {v}"));
            }
        }
        if !(self.refresh_chunk_mib.is_finite() && self.refresh_chunk_mib > 0.0) {
            return Err(format!("optimizer.refresh_chunk_mib must be positive, got {}", self.refresh_chunk_mib));
        }
        Ok(Shampoo {
            refresh_chunk_bytes: (self.refresh_chunk_mib * (1 << 20) as f64) as i64,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
            block_size: self.block_size,
            skip_preconditioning_dim_size_gt: self.skip_preconditioning_dim_size_gt,
            start_preconditioning_step: start,
            preconditioning_compute_steps: self.preconditioning_compute_steps,
            graft,
            nesterov: self.nesterov,
            ..Shampoo::default()
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.build()?;
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!("optimizer.learning_rate must be positive, got {}", self.learning_rate));
        }
        if self.max_grad_norm < 0.0 {
            return Err(format!("optimizer.max_grad_norm must be >= 0, got {}", self.max_grad_norm));
        }
        self.schedule.validate()
    }
}
