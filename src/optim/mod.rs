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
mod schedule;

pub use adafactor::Adafactor;
pub use adamw::AdamW;
pub use clip::clip_by_global_norm;
pub use schedule::{Decay, Schedule};

use crate::graph::{Result, Tensor, TensorType};
use serde::{Deserialize, Serialize};

/// One state tensor an optimizer keeps for a parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    /// Appended to the parameter name: `<param>/<suffix>`.
    pub suffix: String,
    pub ty: TensorType,
}

/// Scalars of one step, fed from the host.
pub struct StepScalars<'a> {
    /// Learning rate of this step (f32 scalar).
    pub lr: &'a Tensor,
    /// 1-based update count (f32 scalar).
    pub count: &'a Tensor,
}

pub trait Optimizer {
    fn name(&self) -> &'static str;
    /// State kept for a parameter of type `param`, all zero-initialised.
    fn state(&self, param: &TensorType) -> Vec<StateSpec>;
    /// New parameter and state from the parameter, its gradient and state.
    fn update(&self, param: &Tensor, grad: &Tensor, state: &[Tensor], s: &StepScalars) -> Result<(Tensor, Vec<Tensor>)>;
}

/// The optimizer section of a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `adamw` or `adafactor`.
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
            other => Err(format!("optimizer.kind '{other}' is not one of: adamw, adafactor")),
        }
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
