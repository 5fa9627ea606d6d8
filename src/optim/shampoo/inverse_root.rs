//! `(A + ridge·I)^(-1/p)` for a symmetric PSD matrix by the coupled Newton
//! iteration (Higham, Functions of Matrices, eq. 7.18), in f32, as the
//! reference's `matrix_inverse_pth_root` with a relative ridge.

use crate::graph::{fori_loop, while_loop, Function, Graph, Result, Tensor, TensorType};
use crate::DType;

const MAX_ITERS: f64 = 100.0;
const ERROR_TOLERANCE: f64 = 1e-6;
/// The error may grow for an iteration before it falls; more than this and
/// the iteration has stopped converging (f32 round-off).
const MAX_ERROR_RATIO: f64 = 1.2;

pub(super) fn eye(g: &Graph, n: i64) -> Result<Tensor> {
    g.iota(DType::I32, &[n, n], 0)?.eq(&g.iota(DType::I32, &[n, n], 1)?)?.cast(DType::F32)
}

/// `max |a - b|` of each matrix in a stack [k, n, n].
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.sub(b)?.abs()?.max(&[1, 2], false)
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

/// Per matrix of a stack, `new` where `active` [k] holds and `old` elsewhere:
/// a loop over a stack runs while any matrix needs it, and the others keep
/// their values, as the reference's vmapped loop does.
fn keep_done(active: &Tensor, new: &Tensor, old: &Tensor) -> Result<Tensor> {
    let mut shape = vec![active.shape()[0]];
    shape.resize(new.rank(), 1);
    Tensor::select(&active.reshape(&shape)?, new, old)
}

/// Largest eigenvalue of each PSD matrix of `a` [k, n, n] by power iteration
/// (at most 100 steps, until the Rayleigh quotient moves less than 1e-6).
fn max_eigenvalues(a: &Tensor) -> Result<Tensor> {
    let (k, n) = (a.shape()[0], a.shape()[1]);
    let g = a.graph();
    // Any fixed start that is not orthogonal to the top eigenvector does;
    // the estimate only scales the ridge.
    let start: Vec<f64> = (0..n).map(|i| ((i as f64 + 1.0) * 0.7548776662).fract() * 2.0 - 1.0).collect();
    let v0 = g.constant(crate::HostTensor::from_f64(DType::F32, &[n], &start).expect("start vector")).broadcast_to(&[k, n])?;
    let vec = |shape: &[i64], dtype| TensorType::new(dtype, shape);
    // The last carry says whether any matrix goes on, reduced in the body
    // (see `inverse_pth_roots`).
    let types = [vec(&[k], DType::F32), vec(&[k, n], DType::F32), vec(&[k], DType::F32), vec(&[k], DType::Bool), a.ty().clone(), TensorType::scalar(DType::Bool)];
    let active = |c: &[Tensor]| -> Result<Tensor> { c[0].lt(&c[0].scalar_like(MAX_ITERS))?.and(&c[3]) };
    let cond = Function::build("power_iteration_cond", &types, |c| Ok(vec![c[5].clone()]))?;
    let body = Function::build("power_iteration_step", &types, |c| {
        let on = active(c)?;
        let v = c[1].div(&c[1].square()?.sum(&[1], true)?.sqrt()?)?;
        let av = c[4].dot_general(&v, &[0], &[0], &[2], &[1])?;
        let s = v.mul(&av)?.sum(&[1], false)?;
        let moving = s.sub(&c[2])?.abs()?.gt(&s.scalar_like(ERROR_TOLERANCE))?;
        let mut next = vec![keep_done(&on, &c[0].add_scalar(1.0)?, &c[0])?, keep_done(&on, &av, &c[1])?, keep_done(&on, &s, &c[2])?, keep_done(&on, &moving, &c[3])?, c[4].clone()];
        next.push(active(&next)?.any(&[0], false)?);
        Ok(next)
    })?;
    let (i0, s0, run, go) = (g.zeros(DType::F32, &[k]), g.zeros(DType::F32, &[k]), g.full(1.0, DType::Bool, &[k]), g.full(1.0, DType::Bool, &[]));
    Ok(while_loop(&cond, &body, &[&i0, &v0, &s0, &run, a, &go])?.remove(2))
}

/// `(a + ε·λmax(a)·I)^(-1/p)` of a symmetric PSD f32 matrix `a` [n, n] and the
/// iteration's final error `max |M - I|` (an f32 scalar): callers keep their
/// previous root when it is NaN or too large, as the reference does.
pub fn inverse_pth_root(a: &Tensor, p: u32, ridge_epsilon: f64) -> Result<(Tensor, Tensor)> {
    let n = a.shape()[0];
    let (roots, errors) = inverse_pth_roots(&a.reshape(&[1, n, n])?, p, ridge_epsilon)?;
    Ok((roots.reshape(&[n, n])?, errors.reshape(&[])?))
}

/// [`inverse_pth_root`] of every matrix of a stack [k, n, n] at once (one
/// loop for the stack rather than one per matrix): roots [k, n, n], errors [k].
pub fn inverse_pth_roots(a: &Tensor, p: u32, ridge_epsilon: f64) -> Result<(Tensor, Tensor)> {
    let (k, n) = (a.shape()[0], a.shape()[1]);
    let g = a.graph();
    let alpha = -1.0 / p as f64;
    if n == 1 {
        // The power iteration of a 1x1 matrix returns its entry.
        let ridge = a.maximum(&a.scalar_like(1e-6))?.scale(ridge_epsilon)?;
        return Ok((a.add(&ridge)?.powf(alpha)?, g.zeros(DType::F32, &[k])));
    }
    let identity = eye(g, n)?;
    let ridge = max_eigenvalues(a)?.maximum(&g.scalar(1e-6, DType::F32))?.scale(ridge_epsilon)?.reshape(&[k, 1, 1])?;
    let damped = a.add(&identity.mul(&ridge)?)?;
    let z = g.scalar((1.0 + p as f64) / 2.0, DType::F32).div(&damped.square()?.sum(&[1, 2], true)?.sqrt()?)?;
    let m0 = damped.mul(&z)?;
    let err0 = max_abs_diff(&m0, &identity)?;
    let h0 = identity.mul(&z.powf(1.0 / p as f64)?)?;

    // Carries: i, M, H, previous H, error, error ratio, and whether any
    // matrix goes on. That flag is reduced in the body rather than in the
    // condition: with the stack split over devices, every device then stops
    // at the same iteration (a condition reducing its own shard let devices
    // leave the loop at different iterations and wait on each other's
    // collectives).
    let (mats, per) = (TensorType::new(DType::F32, &[k, n, n]), TensorType::new(DType::F32, &[k]));
    let types = [per.clone(), mats.clone(), mats.clone(), mats, per.clone(), per, TensorType::scalar(DType::Bool)];
    let active = |c: &[Tensor]| -> Result<Tensor> {
        let more = c[0].lt(&c[0].scalar_like(MAX_ITERS))?;
        let above = c[4].gt(&c[4].scalar_like(ERROR_TOLERANCE))?.and(&c[5].lt(&c[5].scalar_like(MAX_ERROR_RATIO))?)?;
        more.and(&above)
    };
    let cond = Function::build("newton_cond", &types, |c| Ok(vec![c[6].clone()]))?;
    let body = Function::build("newton_step", &types, |c| {
        let on = active(c)?;
        let identity = eye(c[0].graph(), n)?;
        let mi = identity.scale(1.0 - alpha)?.add(&c[1].scale(alpha)?)?;
        let m = mat_power(&mi, p)?.matmul(&c[1])?;
        let h = c[2].matmul(&mi)?;
        let err = max_abs_diff(&m, &identity)?;
        let ratio = err.div(&c[4])?;
        let next = [c[0].add_scalar(1.0)?, m, h, c[2].clone(), err, ratio];
        let mut next: Vec<Tensor> = next.iter().zip(c).map(|(new, old)| keep_done(&on, new, old)).collect::<Result<_>>()?;
        next.push(active(&next)?.any(&[0], false)?);
        Ok(next)
    })?;
    let (i0, ratio0) = (g.zeros(DType::F32, &[k]), g.full(1.0, DType::F32, &[k]));
    let mut init = vec![i0, m0, h0.clone(), h0, err0, ratio0];
    init.push(active(&init)?.any(&[0], false)?);
    let out = while_loop(&cond, &body, &init.iter().collect::<Vec<_>>())?;
    let error = max_abs_diff(&out[1], &identity)?;
    // Stopped because the error grew: the previous iterate is the better one.
    let converged = out[5].lt(&out[5].scalar_like(MAX_ERROR_RATIO))?;
    Ok((keep_done(&converged, &out[2], &out[3])?, error))
}

/// [`inverse_pth_roots`] of a stack [k, n, n], `chunk` matrices at a time,
/// each chunk's roots written over its statistics in one buffer: beside its
/// input, the refresh then holds one stack-sized buffer, and the iteration's
/// temporaries (M, H, their powers) scale with a chunk rather than with the
/// stack. On a mesh of `partitions` devices the matrices stay split by rows,
/// as the optimizer state holds them: every device computes its rows of every
/// product, and only a chunk is ever gathered whole.
pub fn inverse_pth_roots_in_chunks(a: &Tensor, p: u32, ridge_epsilon: f64, partitions: usize, chunk: i64) -> Result<(Tensor, Tensor)> {
    let (k, n) = (a.shape()[0], a.shape()[1]);
    let parts = partitions.max(1) as i64;
    let chunk = chunk.clamp(1, k.max(1));
    let chunks = (k + chunk - 1) / chunk;
    let by_rows = |t: Tensor| -> Result<Tensor> {
        if parts == 1 || n % parts != 0 {
            return Ok(t);
        }
        let before = "1,".repeat(t.rank() - 2);
        t.with_sharding(&format!("{{devices=[{before}{parts},1]<=[{parts}]}}"))
    };
    if chunks <= 1 {
        return inverse_pth_roots(&by_rows(a.clone())?, p, ridge_epsilon);
    }
    let g = a.graph();
    let total = chunks * chunk;
    // Identity matrices fill the last chunk: their roots converge at once.
    let padded = if total > k { Tensor::concat(&[a, &eye(g, n)?.broadcast_to(&[total - k, n, n])?], 0)? } else { a.clone() };
    let buffer = by_rows(padded.reshape(&[chunks, chunk, n, n])?)?;
    let errors = g.zeros(DType::F32, &[chunks, chunk]);
    let out = fori_loop(0, chunks, &[&buffer, &errors], |j, c| {
        let zero = j.scalar_like(0.0);
        let at = [j, &zero, &zero, &zero];
        let stats = by_rows(c[0].dynamic_slice(&at, &[1, chunk, n, n])?.reshape(&[chunk, n, n])?)?;
        let (roots, errs) = inverse_pth_roots(&stats, p, ridge_epsilon)?;
        let roots = by_rows(roots.reshape(&[1, chunk, n, n])?)?;
        Ok(vec![by_rows(c[0].dynamic_update_slice(&roots, &at)?)?, c[1].dynamic_update_slice(&errs.reshape(&[1, chunk])?, &at[..2])?])
    })?;
    let roots = out[0].reshape(&[total, n, n])?.slice(&[0, 0, 0], &[k, n, n], &[1, 1, 1])?;
    let errors = out[1].reshape(&[total])?.slice(&[0], &[k], &[1])?;
    Ok((roots, errors))
}
