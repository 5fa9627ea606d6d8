//! A tensor held as the rectangular blocks that tile it (the shards the
//! devices of a mesh hold), read in the whole tensor's byte order without
//! ever being put together in one buffer: how a checkpoint is written from
//! device shards.

use super::{numel, HostError, HostTensor};
use crate::dtype::DType;

/// Disjoint blocks that cover a tensor exactly once.
#[derive(Clone, PartialEq)]
pub struct BlockedTensor {
    pub dtype: DType,
    pub shape: Vec<i64>,
    blocks: Vec<HostTensor>,
    /// Contiguous pieces in the whole tensor's byte order.
    runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    /// Byte offset in the whole tensor.
    at: usize,
    block: usize,
    /// Byte offset in the block.
    from: usize,
    len: usize,
}

impl BlockedTensor {
    /// A tensor that is one block.
    pub fn whole(tensor: HostTensor) -> BlockedTensor {
        let len = tensor.data.len();
        let runs = if len == 0 { vec![] } else { vec![Run { at: 0, block: 0, from: 0, len }] };
        BlockedTensor { dtype: tensor.dtype, shape: tensor.shape.clone(), blocks: vec![tensor], runs }
    }

    /// The tensor of `shape` made of `blocks`, each given with the index of
    /// its first element. Refused unless they cover it exactly once.
    pub fn from_blocks(dtype: DType, shape: &[i64], blocks: Vec<(Vec<i64>, HostTensor)>) -> Result<BlockedTensor, HostError> {
        let elem = dtype.size_in_bytes();
        let mut runs = Vec::new();
        for (b, (start, block)) in blocks.iter().enumerate() {
            let fits = start.len() == shape.len()
                && block.shape.len() == shape.len()
                && start.iter().zip(&block.shape).zip(shape).all(|((&s, &n), &whole)| s >= 0 && n >= 0 && s + n <= whole);
            if block.dtype != dtype || !fits || block.data.len() != block.numel() * elem {
                return Err(HostError(format!(
                    "block {b} ({} {:?} at {start:?}) does not fit in a {dtype} tensor of shape {shape:?}",
                    block.dtype, block.shape
                )));
            }
            runs.extend(block_runs(shape, &block.shape, start, elem).into_iter().map(|(at, from, len)| Run { at, block: b, from, len }));
        }
        runs.retain(|r| r.len > 0);
        runs.sort_by_key(|r| r.at);
        let mut next = 0;
        for r in &runs {
            if r.at != next {
                let what = if r.at < next { "overlap" } else { "leave a gap" };
                return Err(HostError(format!("the blocks of a tensor of shape {shape:?} {what} at byte {}", r.at.min(next))));
            }
            next += r.len;
        }
        if next != numel(shape) * elem {
            return Err(HostError(format!("the blocks of a tensor of shape {shape:?} cover {next} of its {} bytes", numel(shape) * elem)));
        }
        let blocks = blocks.into_iter().map(|(_, t)| t).collect();
        Ok(BlockedTensor { dtype, shape: shape.to_vec(), blocks, runs: merge(runs) })
    }

    /// Bytes of the whole tensor.
    pub fn byte_len(&self) -> usize {
        numel(&self.shape) * self.dtype.size_in_bytes()
    }

    /// Bytes the blocks hold: `byte_len` unless a whole tensor was made from
    /// data that does not match its shape.
    pub fn stored_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.data.len()).sum()
    }

    /// Copies the whole tensor's bytes from `offset` on into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.byte_len(), "reading past the end of a tensor");
        let mut at = offset;
        let mut first = self.runs.partition_point(|r| r.at + r.len <= at);
        let mut filled = 0;
        while filled < out.len() {
            let r = self.runs[first];
            let skip = at - r.at;
            let n = (r.len - skip).min(out.len() - filled);
            let src = &self.blocks[r.block].data[r.from + skip..r.from + skip + n];
            out[filled..filled + n].copy_from_slice(src);
            filled += n;
            at += n;
            first += 1;
        }
    }

    /// The tensor in one buffer, moved rather than copied when it is one block.
    pub fn into_whole(mut self) -> HostTensor {
        if self.blocks.len() == 1 && self.blocks[0].shape == self.shape {
            return self.blocks.remove(0);
        }
        self.to_whole()
    }

    /// The tensor in one buffer.
    pub fn to_whole(&self) -> HostTensor {
        let mut whole = HostTensor::zeros(self.dtype, &self.shape);
        self.read_at(0, &mut whole.data);
        whole
    }
}

/// Joins runs that continue each other in the same block (a block that spans
/// every dimension but the first is then one run).
fn merge(runs: Vec<Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if last.block == r.block && last.from + last.len == r.from => last.len += r.len,
            _ => out.push(r),
        }
    }
    out
}

impl std::fmt::Debug for BlockedTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockedTensor({} {:?} in {} block(s))", self.dtype, self.shape, self.blocks.len())
    }
}

/// Row-major strides (in elements) of `shape`.
fn strides(shape: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1] as usize;
    }
    s
}

/// The contiguous runs of the block of `block` shape at `start` inside a
/// tensor of `shape`: (byte offset in the tensor, byte offset in the block,
/// bytes), one per row of the last dimension.
pub(crate) fn block_runs(shape: &[i64], block: &[i64], start: &[i64], elem: usize) -> Vec<(usize, usize, usize)> {
    let Some(last) = shape.len().checked_sub(1) else { return vec![(0, 0, elem)] };
    let (full_strides, block_strides) = (strides(shape), strides(block));
    let len = block[last] as usize * elem;
    (0..numel(&block[..last]))
        .map(|r| {
            let mut at = start[last] as usize;
            for k in 0..last {
                let c = (r * block[last] as usize / block_strides[k]) % block[k] as usize;
                at += (c + start[k] as usize) * full_strides[k];
            }
            (at * elem, r * len, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(shape: &[i64]) -> HostTensor {
        HostTensor::new::<i32>(shape, &(0..numel(shape) as i32).collect::<Vec<_>>()).unwrap()
    }

    /// The block of `whole` at `start` with `shape`, copied element by element.
    fn cut(whole: &HostTensor, start: &[i64], shape: &[i64]) -> HostTensor {
        let values = whole.to_vec::<i32>().unwrap();
        let cols = whole.shape[1];
        let picked: Vec<i32> =
            (0..shape[0]).flat_map(|r| (0..shape[1]).map(move |c| (r, c))).map(|(r, c)| values[((start[0] + r) * cols + start[1] + c) as usize]).collect();
        HostTensor::new(shape, &picked).unwrap()
    }

    #[test]
    fn blocks_in_any_split_read_back_as_the_whole_tensor() {
        let whole = counting(&[6, 8]);
        assert_eq!(BlockedTensor::whole(whole.clone()).into_whole(), whole);
        // Rows, columns and a 2 x 2 grid of blocks, listed out of order.
        let splits: [&[([i64; 2], [i64; 2])]; 3] = [
            &[([3, 0], [3, 8]), ([0, 0], [3, 8])],
            &[([0, 4], [6, 4]), ([0, 0], [6, 4])],
            &[([3, 4], [3, 4]), ([0, 0], [3, 4]), ([0, 4], [3, 4]), ([3, 0], [3, 4])],
        ];
        for split in splits {
            let blocks = split.iter().map(|(s, n)| (s.to_vec(), cut(&whole, s, n))).collect();
            let blocked = BlockedTensor::from_blocks(DType::I32, &whole.shape, blocks).unwrap();
            assert_eq!(blocked.to_whole(), whole, "{split:?}");
            assert_eq!(blocked.clone().into_whole(), whole, "{split:?}");
            // Reads that start and end inside runs.
            for (offset, len) in [(0, 192), (5, 40), (14, 3), (100, 92), (191, 1)] {
                let mut out = vec![0; len];
                blocked.read_at(offset, &mut out);
                assert_eq!(out, whole.data[offset..offset + len], "{split:?} at {offset}+{len}");
            }
        }
    }

    #[test]
    fn blocks_that_overlap_or_leave_gaps_are_refused() {
        let whole = counting(&[4, 4]);
        let top = (vec![0, 0], cut(&whole, &[0, 0], &[2, 4]));
        let overlap = BlockedTensor::from_blocks(DType::I32, &[4, 4], vec![top.clone(), (vec![1, 0], cut(&whole, &[1, 0], &[2, 4]))]);
        assert!(overlap.unwrap_err().to_string().contains("overlap"));
        let gap = BlockedTensor::from_blocks(DType::I32, &[4, 4], vec![top.clone()]).unwrap_err().to_string();
        assert!(gap.contains("cover 32 of its 64 bytes"), "{gap}");
        let outside = BlockedTensor::from_blocks(DType::I32, &[4, 4], vec![(vec![3, 0], cut(&whole, &[0, 0], &[2, 4]))]);
        assert!(outside.unwrap_err().to_string().contains("does not fit"));
    }
}
