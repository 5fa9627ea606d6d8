//! Counter-based random numbers inside the graph: Threefry-2x32 (20 rounds),
//! as JAX uses it, built from u32 add / xor / shift primitives.
//!
//! A key is a `u32[2]` tensor. Bits are a pure function of (key, position),
//! so the same key gives the same numbers in every compile, on every device
//! and whatever else the program computes. Bit generation follows JAX's
//! partitionable scheme (`jax_threefry_partitionable`): the bits at row-major
//! position `i` are `x0 ^ x1` where `(x0, x1) = threefry2x32(key, (0, i))`.
//!
//! ```ignore
//! let key = random::key(&g, 42);
//! let [k_drop, k_init] = random::split(&key, 2)?[..] else { unreachable!() };
//! let y = random::dropout(&x, 0.1, &k_drop)?;
//! ```

use super::error::{GraphError, Result};
use super::tensor::{Graph, Tensor};
use crate::host::HostTensor;
use crate::DType;

const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
/// Threefry's key-schedule parity constant.
const PARITY: u32 = 0x1BD1_1BDA;

/// The key for an integer seed (JAX's `PRNGKey(seed)`: high and low 32 bits).
pub fn key(graph: &Graph, seed: u64) -> Tensor {
    let words = [(seed >> 32) as u32, seed as u32];
    graph.constant(HostTensor::new(&[2], &words).expect("two words for shape [2]"))
}

fn check_key(key: &Tensor, op: &str) -> Result<()> {
    if key.dtype() != DType::U32 || key.shape() != [2] {
        return Err(GraphError::op(op, format!("a PRNG key must be u32[2], got {:?}", key.ty())));
    }
    Ok(())
}

/// The two words of a key as u32 scalars.
fn key_words(key: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((key.narrow(0, 0, 1)?.reshape(&[])?, key.narrow(0, 1, 1)?.reshape(&[])?))
}

fn rotate_left(x: &Tensor, r: u32) -> Result<Tensor> {
    let left = x.shift_left(&x.graph().scalar(r as f64, DType::U32))?;
    let right = x.shift_right(&x.graph().scalar((32 - r) as f64, DType::U32))?;
    left.or(&right)
}

/// Threefry-2x32 with 20 rounds on counters `(x0, x1)` (u32, same shape)
/// under key words `(k0, k1)` (u32 scalars or the counters' shape).
pub fn threefry2x32(k0: &Tensor, k1: &Tensor, x0: &Tensor, x1: &Tensor) -> Result<(Tensor, Tensor)> {
    for t in [k0, k1, x0, x1] {
        if t.dtype() != DType::U32 {
            return Err(GraphError::op("threefry2x32", format!("needs u32 keys and counters, got {:?}", t.ty())));
        }
    }
    if x0.shape() != x1.shape() {
        return Err(GraphError::op("threefry2x32", format!("counters differ in shape: {:?} and {:?}", x0.ty(), x1.ty())));
    }
    let g = x0.graph();
    let c = |v: u32| g.scalar(v as f64, DType::U32);
    let k2 = k0.xor(k1)?.xor(&c(PARITY))?;
    let ks = [k0.clone(), k1.clone(), k2];
    let mut a = x0.add(&ks[0])?;
    let mut b = x1.add(&ks[1])?;
    // Five groups of four rounds; key injection i adds ks[i % 3], ks[(i + 1) % 3] + i.
    for i in 1..=5usize {
        for &r in &ROTATIONS[(i - 1) % 2] {
            a = a.add(&b)?;
            b = rotate_left(&b, r)?.xor(&a)?;
        }
        a = a.add(&ks[i % 3])?;
        b = b.add(&ks[(i + 1) % 3])?.add(&c(i as u32))?;
    }
    Ok((a, b))
}

/// Counters `(0, i)` for every row-major position `i` of `shape`.
fn counters(g: &Graph, shape: &[i64]) -> Result<(Tensor, Tensor)> {
    let n: i64 = shape.iter().product();
    if n > u32::MAX as i64 {
        return Err(GraphError::op("random_bits", format!("shape {shape:?} has more than 2^32 elements")));
    }
    let lo = g.iota(DType::U32, &[n], 0)?.reshape(shape)?;
    Ok((g.zeros(DType::U32, shape), lo))
}

/// Uniformly random u32 bits of `shape`.
pub fn random_bits(key: &Tensor, shape: &[i64]) -> Result<Tensor> {
    check_key(key, "random_bits")?;
    let (k0, k1) = key_words(key)?;
    let (hi, lo) = counters(key.graph(), shape)?;
    let (a, b) = threefry2x32(&k0, &k1, &hi, &lo)?;
    a.xor(&b)
}

/// `n` independent keys derived from `key`, as a list.
pub fn split(key: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let keys = split_stacked(key, n)?;
    (0..n as i64).map(|i| keys.narrow(0, i, 1)?.reshape(&[2])).collect()
}

/// `n` independent keys derived from `key`, stacked as `u32[n, 2]`.
pub fn split_stacked(key: &Tensor, n: usize) -> Result<Tensor> {
    check_key(key, "split")?;
    if n == 0 {
        return Err(GraphError::op("split", "needs n >= 1 keys"));
    }
    let (k0, k1) = key_words(key)?;
    let (hi, lo) = counters(key.graph(), &[n as i64])?;
    let (a, b) = threefry2x32(&k0, &k1, &hi, &lo)?;
    Tensor::concat(&[&a.unsqueeze(1)?, &b.unsqueeze(1)?], 1)
}

/// A key derived from `key` and the value `data` (e.g. a step or layer index);
/// `data` may be a u32 scalar tensor computed in the graph.
pub fn fold_in(key: &Tensor, data: &Tensor) -> Result<Tensor> {
    check_key(key, "fold_in")?;
    if data.dtype() != DType::U32 || data.rank() != 0 {
        return Err(GraphError::op("fold_in", format!("data must be a u32 scalar, got {:?}", data.ty())));
    }
    let (k0, k1) = key_words(key)?;
    let zero = key.graph().scalar(0.0, DType::U32);
    let (a, b) = threefry2x32(&k0, &k1, &zero, data)?;
    Tensor::concat(&[&a.reshape(&[1])?, &b.reshape(&[1])?], 0)
}

/// [`fold_in`] with a constant.
pub fn fold_in_const(key: &Tensor, data: u32) -> Result<Tensor> {
    fold_in(key, &key.graph().scalar(data as f64, DType::U32))
}

/// Uniform floats in `[0, 1)` of `dtype` (f32 or f64 computed exactly; f16 and
/// bf16 are rounded from f32, so they can round up to 1.0).
fn unit_uniform(key: &Tensor, shape: &[i64], dtype: DType) -> Result<Tensor> {
    let g = key.graph();
    match dtype {
        DType::F64 => {
            // 52 mantissa bits from two independent 32-bit draws.
            let bits = random_bits(key, &[&[2], shape].concat())?;
            let hi = bits.narrow(0, 0, 1)?.reshape(shape)?.cast(DType::I64)?;
            let lo = bits.narrow(0, 1, 1)?.reshape(shape)?.cast(DType::I64)?;
            let word = hi.shift_left(&g.scalar(32.0, DType::I64))?.or(&lo)?;
            let mantissa = word.shift_right(&g.scalar(12.0, DType::I64))?;
            let one = g.constant(HostTensor::scalar(1.0f64.to_bits() as i64));
            mantissa.or(&one)?.bitcast(DType::F64)?.add_scalar(-1.0)
        }
        DType::F32 | DType::F16 | DType::BF16 => {
            // The top 23 bits as the mantissa of a float in [1, 2), minus one.
            let bits = random_bits(key, shape)?;
            let mantissa = bits.shift_right(&g.scalar(9.0, DType::U32))?;
            let one = g.scalar(1.0f32.to_bits() as f64, DType::U32);
            mantissa.or(&one)?.bitcast(DType::F32)?.add_scalar(-1.0)?.cast(dtype)
        }
        other => Err(GraphError::op("uniform", format!("needs a floating-point dtype, got {other}"))),
    }
}

/// Uniform floats in `[low, high)`.
pub fn uniform(key: &Tensor, shape: &[i64], dtype: DType, low: f64, high: f64) -> Result<Tensor> {
    check_key(key, "uniform")?;
    if !(low < high) || !low.is_finite() || !high.is_finite() {
        return Err(GraphError::op("uniform", format!("needs finite low < high, got [{low}, {high})")));
    }
    let u = unit_uniform(key, shape, dtype)?;
    // Rounding of the affine map must not push values below `low`.
    u.scale(high - low)?.add_scalar(low)?.maximum(&u.scalar_like(low))
}

/// Standard normal floats (Box–Muller on two independent uniform draws).
pub fn normal(key: &Tensor, shape: &[i64], dtype: DType) -> Result<Tensor> {
    check_key(key, "normal")?;
    let work = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let u = unit_uniform(key, &[&[2], shape].concat(), work)?;
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = u.narrow(0, 0, 1)?.reshape(shape)?.neg()?.add_scalar(1.0)?;
    let u2 = u.narrow(0, 1, 1)?.reshape(shape)?;
    let radius = u1.log()?.scale(-2.0)?.sqrt()?;
    let angle = u2.scale(2.0 * std::f64::consts::PI)?;
    radius.mul(&angle.cos()?)?.cast(dtype)
}

/// Booleans that are true with probability `p`.
pub fn bernoulli(key: &Tensor, p: f64, shape: &[i64]) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(GraphError::op("bernoulli", format!("probability must be in [0, 1], got {p}")));
    }
    let u = uniform(key, shape, DType::F32, 0.0, 1.0)?;
    u.lt(&u.scalar_like(p))
}

/// Inverted dropout: zeroes each element with probability `rate` and scales
/// the rest by `1 / (1 - rate)`, so the expectation is unchanged.
pub fn dropout(x: &Tensor, rate: f64, key: &Tensor) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        return Err(GraphError::op("dropout", format!("rate must be in [0, 1), got {rate}")));
    }
    if !x.dtype().is_float() {
        return Err(GraphError::op("dropout", format!("needs a floating-point tensor, got {:?}", x.ty())));
    }
    if rate == 0.0 {
        return Ok(x.clone());
    }
    let keep = bernoulli(key, 1.0 - rate, x.shape())?;
    Tensor::select(&keep, &x.scale(1.0 / (1.0 - rate))?, &x.zeros_like()?)
}

/// Samples indices (i32) along `axis` with probabilities `softmax(logits)`,
/// by the Gumbel-max trick; `axis` is removed from the result.
pub fn categorical(key: &Tensor, logits: &Tensor, axis: i64) -> Result<Tensor> {
    check_key(key, "categorical")?;
    if !logits.dtype().is_float() {
        return Err(GraphError::op("categorical", format!("needs floating-point logits, got {:?}", logits.ty())));
    }
    logits.axis(axis)?;
    // Uniforms in [tiny, 1) keep both logarithms finite.
    let u = uniform(key, logits.shape(), DType::F32, f32::MIN_POSITIVE as f64, 1.0)?;
    let gumbel = u.log()?.neg()?.log()?.neg()?.cast(logits.dtype())?;
    logits.stop_gradient()?.add(&gumbel)?.argmax(axis)
}

/// Samples one index per row of `logits [B, V]` with probabilities
/// `softmax(logits)`, each row with its own key (`keys: u32[B, 2]`) and a
/// `step` counter (u32 scalar), by the Gumbel-max trick. A row's draw depends
/// only on its key and the step, not on the other rows, so results do not
/// change with how rows are batched or split over devices.
pub fn categorical_rows(keys: &Tensor, logits: &Tensor, step: &Tensor) -> Result<Tensor> {
    let (b, v) = (logits.dim(0)?, logits.dim(-1)?);
    if logits.rank() != 2 || !logits.dtype().is_float() {
        return Err(GraphError::op("categorical_rows", format!("needs float logits [B, V], got {:?}", logits.ty())));
    }
    if keys.dtype() != DType::U32 || keys.shape() != [b, 2] {
        return Err(GraphError::op("categorical_rows", format!("keys must be u32[{b}, 2] for logits {:?}, got {:?}", logits.ty(), keys.ty())));
    }
    if step.dtype() != DType::U32 || step.rank() != 0 {
        return Err(GraphError::op("categorical_rows", format!("step must be a u32 scalar, got {:?}", step.ty())));
    }
    let g = logits.graph();
    let word = |i: i64| keys.narrow(1, i, 1)?.broadcast_to(&[b, v]);
    let (a, c) = threefry2x32(&word(0)?, &word(1)?, &step.broadcast_to(&[b, v])?, &g.iota(DType::U32, &[b, v], 1)?)?;
    let bits = a.xor(&c)?;
    // Top 23 bits as a float in [1, 2), minus one; the floor keeps both logarithms finite.
    let mantissa = bits.shift_right(&g.scalar(9.0, DType::U32))?.or(&g.scalar(1.0f32.to_bits() as f64, DType::U32))?;
    let u = mantissa.bitcast(DType::F32)?.add_scalar(-1.0)?.maximum(&g.scalar(f32::MIN_POSITIVE as f64, DType::F32))?;
    let gumbel = u.log()?.neg()?.log()?.neg()?;
    logits.cast(DType::F32)?.stop_gradient()?.add(&gumbel)?.argmax(-1)
}
