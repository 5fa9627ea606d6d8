//! Adafactor (Shazeer & Stern, 2018) with the defaults DALL·E mini trained
//! with: factored second moments for matrices whose last two dimensions are
//! both at least 128, decay `1 - t^-0.8`, update clipping at RMS 1, and the
//! step scaled by the parameter's RMS.

use super::{Optimizer, StateSpec, StepScalars};
use crate::graph::{Result, Tensor, TensorType};

#[derive(Clone, Debug)]
pub struct Adafactor {
    pub decay_rate: f64,
    pub eps1: f64,
    pub eps2: f64,
    pub clipping_threshold: f64,
    pub min_dim_size_to_factor: i64,
    pub multiply_by_parameter_scale: bool,
    pub weight_decay: f64,
}

impl Default for Adafactor {
    fn default() -> Self {
        Adafactor {
            decay_rate: 0.8,
            eps1: 1e-30,
            eps2: 1e-3,
            clipping_threshold: 1.0,
            min_dim_size_to_factor: 128,
            multiply_by_parameter_scale: true,
            weight_decay: 0.0,
        }
    }
}

impl Adafactor {
    fn factored(&self, shape: &[i64]) -> bool {
        let r = shape.len();
        r >= 2 && shape[r - 1] >= self.min_dim_size_to_factor && shape[r - 2] >= self.min_dim_size_to_factor
    }
}

fn rms(t: &Tensor) -> Result<Tensor> {
    t.square()?.mean_all()?.sqrt()
}

impl Optimizer for Adafactor {
    fn name(&self) -> &'static str {
        "adafactor"
    }
    fn state(&self, param: &TensorType) -> Vec<StateSpec> {
        let s = &param.shape;
        if self.factored(s) {
            let r = s.len();
            let row: Vec<i64> = s[..r - 1].to_vec();
            let col: Vec<i64> = s[..r - 2].iter().chain(&s[r - 1..]).copied().collect();
            vec![
                StateSpec::zeros("v_row", param.with_shape(row)),
                StateSpec::zeros("v_col", param.with_shape(col)),
            ]
        } else {
            vec![StateSpec::zeros("v", param.clone())]
        }
    }
    fn update(&self, p: &Tensor, g: &Tensor, state: &[Tensor], s: &StepScalars) -> Result<(Tensor, Vec<Tensor>)> {
        let beta2 = s.count.pow(&s.count.scalar_like(-self.decay_rate))?.neg()?.add_scalar(1.0)?;
        let one_minus = beta2.neg()?.add_scalar(1.0)?;
        let g2 = g.square()?.add_scalar(self.eps1)?;
        let (u, new_state) = if self.factored(p.shape()) {
            let r = p.rank() as i64;
            let v_row = state[0].mul(&beta2)?.add(&g2.mean(&[r - 1], false)?.mul(&one_minus)?)?;
            let v_col = state[1].mul(&beta2)?.add(&g2.mean(&[r - 2], false)?.mul(&one_minus)?)?;
            let row_mean = v_row.mean(&[r - 2], true)?;
            let row_factor = v_row.div(&row_mean)?.rsqrt()?.unsqueeze(-1)?;
            let col_factor = v_col.rsqrt()?.unsqueeze(-2)?;
            (g.mul(&row_factor)?.mul(&col_factor)?, vec![v_row, v_col])
        } else {
            let v = state[0].mul(&beta2)?.add(&g2.mul(&one_minus)?)?;
            (g.mul(&v.rsqrt()?)?, vec![v])
        };
        let clip = rms(&u)?.scale(1.0 / self.clipping_threshold)?.maximum(&u.scalar_like(1.0))?;
        let u = u.div(&clip)?;
        let mut lr = s.lr.clone();
        if self.multiply_by_parameter_scale {
            lr = lr.mul(&rms(p)?.maximum(&p.scalar_like(self.eps2))?)?;
        }
        let mut step = u.mul(&lr)?;
        if self.weight_decay != 0.0 {
            step = step.add(&p.mul(&s.lr.scale(self.weight_decay)?)?)?;
        }
        Ok((p.sub(&step)?, new_state))
    }
}
