//! Dense row-major arrays on the host: what goes into and comes out of programs.

mod blocks;
pub mod heap;

pub use blocks::BlockedTensor;
pub(crate) use blocks::block_runs;

use crate::dtype::DType;
use half::{bf16, f16};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// A dense row-major array in host memory (little-endian bytes).
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// Rust element types that map to a [`DType`].
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &[u8]) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:expr, $n:expr, |$v:ident| $to:expr, |$x:ident| $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; $n];
                b.copy_from_slice(&bytes[..$n]);
                <$t>::from_le_bytes(b)
            }
            fn to_f64(self) -> f64 {
                let $v = self;
                $to
            }
            fn from_f64($x: f64) -> Self {
                $from
            }
        }
    };
}

element!(f32, DType::F32, 4, |v| v as f64, |x| x as f32);
element!(f64, DType::F64, 8, |v| v, |x| x);
element!(i32, DType::I32, 4, |v| v as f64, |x| x as i32);
element!(i64, DType::I64, 8, |v| v as f64, |x| x as i64);
element!(u32, DType::U32, 4, |v| v as f64, |x| x as u32);
element!(u8, DType::U8, 1, |v| v as f64, |x| x as u8);
element!(f16, DType::F16, 2, |v| v.to_f64(), |x| f16::from_f64(x));
element!(bf16, DType::BF16, 2, |v| v.to_f64(), |x| bf16::from_f64(x));

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

pub fn numel(shape: &[i64]) -> usize {
    shape.iter().product::<i64>() as usize
}

impl HostTensor {
    pub fn new<T: Element>(shape: &[i64], values: &[T]) -> Result<Self, HostError> {
        if shape.iter().any(|d| *d < 0) {
            return Err(HostError(format!("negative dimension in shape {shape:?}")));
        }
        if numel(shape) != values.len() {
            return Err(HostError(format!(
                "shape {shape:?} holds {} elements but {} values were given",
                numel(shape),
                values.len()
            )));
        }
        let mut data = Vec::with_capacity(values.len() * T::DTYPE.size_in_bytes());
        for v in values {
            v.write_le(&mut data);
        }
        Ok(HostTensor { dtype: T::DTYPE, shape: shape.to_vec(), data })
    }

    pub fn scalar<T: Element>(v: T) -> Self {
        let mut data = Vec::new();
        v.write_le(&mut data);
        HostTensor { dtype: T::DTYPE, shape: vec![], data }
    }

    pub fn zeros(dtype: DType, shape: &[i64]) -> Self {
        HostTensor { dtype, shape: shape.to_vec(), data: vec![0; numel(shape) * dtype.size_in_bytes()] }
    }

    /// Builds from f64 values, converting to `dtype`.
    pub fn from_f64(dtype: DType, shape: &[i64], values: &[f64]) -> Result<Self, HostError> {
        macro_rules! conv {
            ($t:ty) => {
                HostTensor::new::<$t>(shape, &values.iter().map(|v| <$t>::from_f64(*v)).collect::<Vec<_>>())
            };
        }
        match dtype {
            DType::Bool => conv!(bool),
            DType::U8 => conv!(u8),
            DType::U32 => conv!(u32),
            DType::I32 => conv!(i32),
            DType::I64 => conv!(i64),
            DType::F16 => conv!(f16),
            DType::BF16 => conv!(bf16),
            DType::F32 => conv!(f32),
            DType::F64 => conv!(f64),
        }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The values as `T`; the dtype must match exactly.
    /// The tensor cut along its first axis into `parts` equal pieces (a
    /// global batch into per-device batches); refused unless they divide it.
    pub fn split_rows(&self, parts: usize) -> Result<Vec<HostTensor>, HostError> {
        let n = self.shape.first().copied().unwrap_or(0) as usize;
        if parts == 0 || n % parts != 0 {
            return Err(HostError(format!("a batch of {n} rows cannot be split evenly over {parts} devices")));
        }
        let per = n / parts;
        let row = self.data.len() / n.max(1);
        Ok((0..parts)
            .map(|d| {
                let mut shape = self.shape.clone();
                shape[0] = per as i64;
                HostTensor { dtype: self.dtype, shape, data: self.data[d * per * row..(d + 1) * per * row].to_vec() }
            })
            .collect())
    }

    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, HostError> {
        if self.dtype != T::DTYPE {
            return Err(HostError(format!("tensor holds {} values, not {}", self.dtype, T::DTYPE)));
        }
        let w = self.dtype.size_in_bytes();
        Ok(self.data.chunks_exact(w).map(T::read_le).collect())
    }

    /// The values converted to f64, whatever the dtype.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let w = self.dtype.size_in_bytes();
        let chunks = self.data.chunks_exact(w);
        match self.dtype {
            DType::Bool => chunks.map(|c| bool::read_le(c).to_f64()).collect(),
            DType::U8 => chunks.map(|c| u8::read_le(c).to_f64()).collect(),
            DType::U32 => chunks.map(|c| u32::read_le(c).to_f64()).collect(),
            DType::I32 => chunks.map(|c| i32::read_le(c).to_f64()).collect(),
            DType::I64 => chunks.map(|c| i64::read_le(c).to_f64()).collect(),
            DType::F16 => chunks.map(|c| f16::read_le(c).to_f64()).collect(),
            DType::BF16 => chunks.map(|c| bf16::read_le(c).to_f64()).collect(),
            DType::F32 => chunks.map(|c| f32::read_le(c).to_f64()).collect(),
            DType::F64 => chunks.map(|c| f64::read_le(c)).collect(),
        }
    }

    /// Converts to another dtype through f64.
    pub fn cast(&self, dtype: DType) -> HostTensor {
        if dtype == self.dtype {
            return self.clone();
        }
        HostTensor::from_f64(dtype, &self.shape, &self.to_f64_vec()).expect("shape unchanged")
    }
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.to_f64_vec();
        let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
        write!(f, "HostTensor({} {:?} [{}{}])", self.dtype, self.shape, shown.join(", "), if v.len() > 8 { ", ..." } else { "" })
    }
}
