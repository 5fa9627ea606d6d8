//! Adam with decoupled weight decay (Loshchilov & Hutter).

use super::{Optimizer, StateSpec, StepScalars};
use crate::graph::{Result, Tensor, TensorType};

#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn state(&self, param: &TensorType) -> Vec<StateSpec> {
        vec![StateSpec::zeros("mu", param.clone()), StateSpec::zeros("nu", param.clone())]
    }
    fn update(&self, p: &Tensor, g: &Tensor, state: &[Tensor], s: &StepScalars) -> Result<(Tensor, Vec<Tensor>)> {
        let (m, v) = (&state[0], &state[1]);
        let m = m.scale(self.beta1)?.add(&g.scale(1.0 - self.beta1)?)?;
        let v = v.scale(self.beta2)?.add(&g.square()?.scale(1.0 - self.beta2)?)?;
        // Bias corrections 1 - beta^t, with t the update count.
        let correction = |beta: f64| -> Result<Tensor> { s.count.scalar_like(beta).pow(s.count)?.neg()?.add_scalar(1.0) };
        let m_hat = m.div(&correction(self.beta1)?)?;
        let v_hat = v.div(&correction(self.beta2)?)?;
        let mut step = m_hat.div(&v_hat.sqrt()?.add_scalar(self.eps)?)?;
        if self.weight_decay != 0.0 {
            step = step.add(&p.scale(self.weight_decay)?)?;
        }
        let p = p.sub(&step.mul(s.lr)?)?;
        Ok((p, vec![m, v]))
    }
}
