//! Tensors to safetensors files of bounded size, and back.

use super::CheckpointError;
use crate::dtype::DType;
use crate::host::{BlockedTensor, HostTensor};
use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors, TensorInfo};
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

/// Checks what a trainer hands over before anything is written: names unique
/// and non-empty, dimensions non-negative, byte counts matching the shapes.
pub fn validate_tensors(tensors: &[(String, BlockedTensor)]) -> Result<(), CheckpointError> {
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
        let want = t.byte_len();
        if t.stored_bytes() != want {
            return Err(CheckpointError::Invalid(format!(
                "checkpoint tensor '{name}' ({} {:?}) holds {} bytes, expected {want}",
                t.dtype,
                t.shape,
                t.stored_bytes()
            )));
        }
    }
    Ok(())
}

/// Groups tensors, in order, into shards of at most `max_bytes` of tensor data.
/// A tensor bigger than the limit gets a shard of its own (tensors are never split).
pub fn plan_shards(tensors: &[(String, BlockedTensor)], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = 0u64;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let bytes = t.byte_len() as u64;
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

/// One safetensors file of some of a checkpoint's tensors, read piece by
/// piece from their blocks: the file is never held whole in memory. Its bytes
/// are those `safetensors::serialize` writes for the same tensors (the same
/// order: by dtype alignment, then name).
pub struct ShardFile<'a> {
    /// The length prefix and the JSON header, padded to 8 bytes.
    head: Vec<u8>,
    /// Each tensor with the offset of its data in the file.
    tensors: Vec<(usize, &'a BlockedTensor)>,
    len: usize,
}

impl<'a> ShardFile<'a> {
    pub fn new(tensors: &'a [(String, BlockedTensor)], indices: &[usize]) -> Result<ShardFile<'a>, CheckpointError> {
        let mut order: Vec<&(String, BlockedTensor)> = indices.iter().map(|&i| &tensors[i]).collect();
        order.sort_by(|(a, x), (b, y)| to_safetensors_dtype(y.dtype).cmp(&to_safetensors_dtype(x.dtype)).then(a.cmp(b)));
        let mut infos = Vec::with_capacity(order.len());
        let mut offset = 0;
        for (name, t) in &order {
            let shape = t.shape.iter().map(|d| *d as usize).collect();
            infos.push((name.clone(), TensorInfo { dtype: to_safetensors_dtype(t.dtype), shape, data_offsets: (offset, offset + t.byte_len()) }));
            offset += t.byte_len();
        }
        let invalid = |e: String| CheckpointError::Invalid(format!("cannot encode a safetensors header: {e}"));
        let metadata = Metadata::new(None, infos).map_err(|e| invalid(e.to_string()))?;
        let mut header = serde_json::to_vec(&metadata).map_err(|e| invalid(e.to_string()))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut head = (header.len() as u64).to_le_bytes().to_vec();
        head.extend(header);
        let mut at = head.len();
        let tensors = order
            .into_iter()
            .map(|(_, t)| {
                at += t.byte_len();
                (at - t.byte_len(), t)
            })
            .collect();
        Ok(ShardFile { len: head.len() + offset, head, tensors })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies the file's bytes from `offset` on into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        let end = offset + out.len();
        assert!(end <= self.len, "reading past the end of a checkpoint file");
        let mut filled = 0;
        if offset < self.head.len() {
            let n = (self.head.len() - offset).min(out.len());
            out[..n].copy_from_slice(&self.head[offset..offset + n]);
            filled = n;
        }
        let first = self.tensors.partition_point(|(start, t)| start + t.byte_len() <= offset + filled);
        for (start, t) in &self.tensors[first..] {
            if filled == out.len() {
                break;
            }
            let at = offset + filled;
            let n = (start + t.byte_len() - at).min(out.len() - filled);
            t.read_at(at - start, &mut out[filled..filled + n]);
            filled += n;
        }
    }

    /// The bytes from `offset` to `offset + len`.
    pub fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.read_at(offset, &mut out);
        out
    }
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

    fn t(bytes: usize) -> BlockedTensor {
        BlockedTensor::whole(HostTensor { dtype: DType::U8, shape: vec![bytes as i64], data: vec![1; bytes] })
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
        let bad = BlockedTensor::whole(HostTensor { dtype: DType::F32, shape: vec![2], data: vec![0; 7] });
        let err = validate_tensors(&[("w".into(), bad)]).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("7 bytes") && err.contains("expected 8"), "{err}");
        let dup = validate_tensors(&[("a".into(), t(1)), ("a".into(), t(1))]).unwrap_err().to_string();
        assert!(dup.contains("'a' appears twice"), "{dup}");
    }

    #[test]
    fn a_file_read_in_pieces_from_blocks_is_what_safetensors_writes() {
        let a = HostTensor::new::<f32>(&[4, 3], &(0..12).map(|v| v as f32 * 0.5).collect::<Vec<_>>()).unwrap();
        let b = HostTensor::new::<i64>(&[5], &[7, -1, 3, 9, 2]).unwrap();
        let c = HostTensor::new::<u8>(&[3], &[1, 2, 3]).unwrap();
        let halves = |t: &HostTensor| {
            let rows = t.split_rows(2).unwrap();
            let blocks = rows.into_iter().enumerate().map(|(k, r)| (vec![k as i64 * 2, 0], r)).collect();
            BlockedTensor::from_blocks(t.dtype, &t.shape, blocks).unwrap()
        };
        let tensors = vec![("z.a".to_string(), halves(&a)), ("b".to_string(), BlockedTensor::whole(b.clone())), ("c".to_string(), BlockedTensor::whole(c.clone()))];
        let file = ShardFile::new(&tensors, &[0, 1, 2]).unwrap();
        let expected = safetensors::serialize([("z.a", &a), ("b", &b), ("c", &c)].map(|(n, t)| (n, WholeView(t, t.shape.iter().map(|d| *d as usize).collect()))), None).unwrap();
        assert_eq!(file.len(), expected.len());
        assert_eq!(file.bytes(0, file.len()), expected);
        // Pieces that cut the header, tensors and the boundaries between them.
        for piece in [1, 5, 13, 64] {
            let mut joined = Vec::new();
            for start in (0..file.len()).step_by(piece) {
                joined.extend(file.bytes(start, piece.min(file.len() - start)));
            }
            assert_eq!(joined, expected, "pieces of {piece} bytes");
        }
        let back = decode_shard(&expected).unwrap();
        assert_eq!(back.iter().find(|(n, _)| n == "z.a").map(|(_, t)| t), Some(&a));
    }

    /// A whole tensor as safetensors' own writer takes it.
    struct WholeView<'a>(&'a HostTensor, Vec<usize>);

    impl safetensors::View for WholeView<'_> {
        fn dtype(&self) -> StDtype {
            to_safetensors_dtype(self.0.dtype)
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.0.data)
        }
        fn data_len(&self) -> usize {
            self.0.data.len()
        }
    }
}
