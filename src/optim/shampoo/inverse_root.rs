//! `(A + ridge·I)^(-1/p)` for a symmetric PSD matrix by the coupled Newton
//! iteration (Higham, Functions of Matrices, eq. 7.18), in f32, as the
//! reference's `matrix_inverse_pth_root` with a relative ridge.

use crate::graph::{while_loop, Function, Graph, Result, Tensor, TensorType};
use crate::DType;

const MAX_ITERS: f64 = 100.0;
const ERROR_TOLERANCE: f64 = 1e-6;
/// The error may grow for an iteration before it falls; more than this and
/// the iteration has stopped converging (f32 round-off).
const MAX_ERROR_RATIO: f64 = 1.2;

pub(super) fn eye(g: &Graph, n: i64) -> Result<Tensor> {
    g.iota(DType::I32, &[n, n], 0)?.eq(&g.iota(DType::I32, &[n, n], 1)?)?.cast(DType::F32)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.sub(b)?.abs()?.max(&[0, 1], false)
}

/// `m^p` by repeated squaring, multiplying in the reference's order.
fn mat_power(m: &Tensor, p: u32) -> Result<Tensor> {
    let (mut power, mut base, mut i) = (None::<Tensor>, m.clone(), p);
    while i > 0 {
        if i % 2 == 1 {
            power = Some(match power {
                Some(pw) => base.matmul(&pw)?,
                None => base.clone(),
            });
        }
        i /= 2;
        if i > 0 {
            base = base.matmul(&base)?;
        }
    }
    Ok(power.expect("p >= 1"))
}

/// Largest eigenvalue of the PSD matrix `a` by power iteration (at most 100
/// steps, until the Rayleigh quotient moves less than 1e-6).
fn max_eigenvalue(a: &Tensor) -> Result<Tensor> {
    let n = a.shape()[0];
    let g = a.graph();
    // Any fixed start that is not orthogonal to the top eigenvector does;
    // the estimate only scales the ridge.
    let start: Vec<f64> = (0..n).map(|i| ((i as f64 + 1.0) * 0.7548776662).fract() * 2.0 - 1.0).collect();
    let v0 = g.constant(crate::HostTensor::from_f64(DType::F32, &[n], &start).expect("start vector"));
    let types = [TensorType::scalar(DType::F32), TensorType::new(DType::F32, &[n]), TensorType::scalar(DType::F32), TensorType::scalar(DType::Bool), a.ty().clone()];
    let cond = Function::build("power_iteration_cond", &types, |c| Ok(vec![c[0].lt(&c[0].scalar_like(MAX_ITERS))?.and(&c[3])?]))?;
    let body = Function::build("power_iteration_step", &types, |c| {
        let v = c[1].div(&c[1].square()?.sum_all()?.sqrt()?)?;
        let av = c[4].matmul(&v)?;
        let s = v.matmul(&av)?;
        let moving = s.sub(&c[2])?.abs()?.gt(&s.scalar_like(ERROR_TOLERANCE))?;
        Ok(vec![c[0].add_scalar(1.0)?, av, s, moving, c[4].clone()])
    })?;
    let (i0, s0, run) = (g.scalar(0.0, DType::F32), g.scalar(0.0, DType::F32), g.scalar(1.0, DType::Bool));
    Ok(while_loop(&cond, &body, &[&i0, &v0, &s0, &run, a])?.remove(2))
}

/// `(a + ε·λmax(a)·I)^(-1/p)` of a symmetric PSD f32 matrix `a` [n, n] and the
/// iteration's final error `max |M - I|` (an f32 scalar): callers keep their
/// previous root when it is NaN or too large, as the reference does.
pub fn inverse_pth_root(a: &Tensor, p: u32, ridge_epsilon: f64) -> Result<(Tensor, Tensor)> {
    let n = a.shape()[0];
    let g = a.graph();
    let alpha = -1.0 / p as f64;
    if n == 1 {
        // The power iteration of a 1x1 matrix returns its entry.
        let ridge = a.maximum(&a.scalar_like(1e-6))?.scale(ridge_epsilon)?;
        return Ok((a.add(&ridge)?.powf(alpha)?, g.scalar(0.0, DType::F32)));
    }
    let identity = eye(g, n)?;
    let ridge = max_eigenvalue(a)?.maximum(&g.scalar(1e-6, DType::F32))?.scale(ridge_epsilon)?;
    let damped = a.add(&identity.mul(&ridge)?)?;
    let z = g.scalar((1.0 + p as f64) / 2.0, DType::F32).div(&damped.square()?.sum_all()?.sqrt()?)?;
    let m0 = damped.mul(&z)?;
    let err0 = max_abs_diff(&m0, &identity)?;
    let h0 = identity.mul(&z.powf(1.0 / p as f64)?)?;

    // Carries: i, M, H, previous H, error, error ratio.
    let mat = TensorType::new(DType::F32, &[n, n]);
    let scalar = TensorType::scalar(DType::F32);
    let types = [scalar.clone(), mat.clone(), mat.clone(), mat, scalar.clone(), scalar];
    let cond = Function::build("newton_cond", &types, |c| {
        let more = c[0].lt(&c[0].scalar_like(MAX_ITERS))?;
        let above = c[4].gt(&c[4].scalar_like(ERROR_TOLERANCE))?.and(&c[5].lt(&c[5].scalar_like(MAX_ERROR_RATIO))?)?;
        Ok(vec![more.and(&above)?])
    })?;
    let body = Function::build("newton_step", &types, |c| {
        let identity = eye(c[0].graph(), n)?;
        let mi = identity.scale(1.0 - alpha)?.add(&c[1].scale(alpha)?)?;
        let m = mat_power(&mi, p)?.matmul(&c[1])?;
        let h = c[2].matmul(&mi)?;
        let err = max_abs_diff(&m, &identity)?;
        let ratio = err.div(&c[4])?;
        Ok(vec![c[0].add_scalar(1.0)?, m, h, c[2].clone(), err, ratio])
    })?;
    let (i0, ratio0) = (g.scalar(0.0, DType::F32), g.scalar(1.0, DType::F32));
    let out = while_loop(&cond, &body, &[&i0, &m0, &h0, &h0, &err0, &ratio0])?;
    let error = max_abs_diff(&out[1], &identity)?;
    // Stopped because the error grew: the previous iterate is the better one.
    let converged = out[5].lt(&out[5].scalar_like(MAX_ERROR_RATIO))?;
    Ok((Tensor::select(&converged, &out[2], &out[3])?, error))
}
