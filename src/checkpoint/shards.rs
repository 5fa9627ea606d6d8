//! Tensors to safetensors files of bounded size, and back.

use super::CheckpointError;
use crate::dtype::DType;
use crate::host::HostTensor;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashSet;

fn to_safetensors_dtype(dtype: DType) -> StDtype {
    match dtype {
        DType::Bool => StDtype::BOOL,
        DType::U8 => StDtype::U8,
        DType::U32 => StDtype::U32,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
    }
}

fn from_safetensors_dtype(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::BOOL => DType::Bool,
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        _ => return None,
    })
}

/// A host tensor seen through safetensors' `View` without copying it.
struct TensorView<'a> {
    tensor: &'a HostTensor,
    shape: Vec<usize>,
}

impl View for TensorView<'_> {
    fn dtype(&self) -> StDtype {
        to_safetensors_dtype(self.tensor.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.tensor.data)
    }
    fn data_len(&self) -> usize {
        self.tensor.data.len()
    }
}

/// Checks what a trainer hands over before anything is written: names unique
/// and non-empty, dimensions non-negative, byte counts matching the shapes.
pub fn validate_tensors(tensors: &[(String, HostTensor)]) -> Result<(), CheckpointError> {
    let mut seen = HashSet::new();
    for (name, t) in tensors {
        if name.is_empty() {
            return Err(CheckpointError::Invalid("a checkpoint tensor has an empty name".into()));
        }
        if !seen.insert(name.as_str()) {
            return Err(CheckpointError::Invalid(format!("checkpoint tensor '{name}' appears twice")));
        }
        if t.shape.iter().any(|d| *d < 0) {
            return Err(CheckpointError::Invalid(format!("checkpoint tensor '{name}' has a negative dimension in {:?}", t.shape)));
        }
        let want = t.numel() * t.dtype.size_in_bytes();
        if t.data.len() != want {
            return Err(CheckpointError::Invalid(format!(
                "checkpoint tensor '{name}' ({} {:?}) holds {} bytes, expected {want}",
                t.dtype,
                t.shape,
                t.data.len()
            )));
        }
    }
    Ok(())
}

/// Groups tensors, in order, into shards of at most `max_bytes` of tensor data.
/// A tensor bigger than the limit gets a shard of its own (tensors are never split).
pub fn plan_shards(tensors: &[(String, HostTensor)], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = 0u64;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let bytes = t.data.len() as u64;
        if !current.is_empty() && current_bytes + bytes > max_bytes {
            shards.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(i);
        current_bytes += bytes;
    }
    if !current.is_empty() || shards.is_empty() {
        // An empty checkpoint still gets one (empty) file so every step has the same shape.
        shards.push(current);
    }
    shards
}

/// One safetensors file holding the tensors at `indices`.
pub fn encode_shard(tensors: &[(String, HostTensor)], indices: &[usize]) -> Result<Vec<u8>, CheckpointError> {
    let views = indices.iter().map(|&i| {
        let (name, tensor) = &tensors[i];
        let shape = tensor.shape.iter().map(|d| *d as usize).collect();
        (name.as_str(), TensorView { tensor, shape })
    });
    safetensors::serialize(views, None).map_err(|e| CheckpointError::Invalid(format!("cannot encode a safetensors file: {e}")))
}

/// Every tensor of a safetensors file.
pub fn decode_shard(bytes: &[u8]) -> Result<Vec<(String, HostTensor)>, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let mut out = Vec::new();
    for (name, view) in file.iter() {
        let dtype = from_safetensors_dtype(view.dtype()).ok_or_else(|| format!("tensor '{name}' has unsupported dtype {:?}", view.dtype()))?;
        let shape = view.shape().iter().map(|d| *d as i64).collect();
        out.push((name.to_string(), HostTensor { dtype, shape, data: view.data().to_vec() }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bytes: usize) -> HostTensor {
        HostTensor { dtype: DType::U8, shape: vec![bytes as i64], data: vec![1; bytes] }
    }

    #[test]
    fn shards_respect_the_limit_and_keep_order() {
        let tensors: Vec<_> = [4, 4, 3, 9, 1].iter().enumerate().map(|(i, b)| (format!("t{i}"), t(*b))).collect();
        // 4+4 fits in 8; 3 starts a new shard; 9 is over the limit alone; 1 follows it.
        assert_eq!(plan_shards(&tensors, 8), vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        assert_eq!(plan_shards(&tensors, 100), vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(plan_shards(&[], 8), vec![Vec::<usize>::new()]);
    }

    #[test]
    fn validation_names_the_bad_tensor() {
        let bad = HostTensor { dtype: DType::F32, shape: vec![2], data: vec![0; 7] };
        let err = validate_tensors(&[("w".into(), bad)]).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("7 bytes") && err.contains("expected 8"), "{err}");
        let dup = validate_tensors(&[("a".into(), t(1)), ("a".into(), t(1))]).unwrap_err().to_string();
        assert!(dup.contains("'a' appears twice"), "{dup}");
    }
}
