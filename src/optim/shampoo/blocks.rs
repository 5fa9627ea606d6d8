//! How Shampoo sees a parameter: small dimensions merged, then each
//! dimension cut into pieces of at most `block_size`, so no statistic is
//! larger than `block_size²` (the reference's `merge_small_dims` and
//! `BlockPartitioner`).

use crate::graph::{Result, Tensor};

/// Collapses runs of dimensions whose product stays within `max_dim`:
/// `[2, 3, 10]` with 16 gives `[6, 10]`; dimensions of 1 vanish.
pub fn merge_small_dims(shape: &[i64], max_dim: i64) -> Vec<i64> {
    if !shape.is_empty() && shape.iter().all(|&d| d == 1) {
        return vec![1];
    }
    let mut merged = Vec::new();
    let mut product = 1;
    for &d in shape {
        if product * d <= max_dim {
            product *= d;
        } else {
            if product > 1 {
                merged.push(product);
            }
            product = d;
        }
    }
    if product > 1 {
        merged.push(product);
    }
    merged
}

/// The merged shape of a parameter and the pieces of each of its dimensions.
#[derive(Clone, Debug)]
pub struct Blocks {
    pub shape: Vec<i64>,
    pieces: Vec<Vec<i64>>,
}

impl Blocks {
    pub fn new(param_shape: &[i64], merge_max_dim: i64, block_size: i64) -> Blocks {
        let shape = merge_small_dims(param_shape, merge_max_dim);
        let pieces = shape
            .iter()
            .map(|&d| {
                if block_size > 0 && block_size < d {
                    let mut sizes = vec![block_size; ((d - 1) / block_size) as usize];
                    sizes.push(d - block_size * sizes.len() as i64);
                    sizes
                } else {
                    vec![d]
                }
            })
            .collect();
        Blocks { shape, pieces }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Every block as (offsets, sizes), the last dimension varying fastest:
    /// the order the reference keeps statistics in.
    pub fn blocks(&self) -> Vec<(Vec<i64>, Vec<i64>)> {
        let mut out = vec![(Vec::new(), Vec::new())];
        for sizes in &self.pieces {
            let mut next = Vec::with_capacity(out.len() * sizes.len());
            for (starts, lens) in &out {
                let mut start = 0;
                for &len in sizes {
                    let (mut s, mut l) = (starts.clone(), lens.clone());
                    s.push(start);
                    l.push(len);
                    next.push((s, l));
                    start += len;
                }
            }
            out = next;
        }
        out
    }

    /// Side of each statistic, in state order: each block, then each of its dimensions.
    pub fn statistic_sizes(&self) -> Vec<i64> {
        self.blocks().into_iter().flat_map(|(_, lens)| lens).collect()
    }

    /// Cuts `t` (already in the merged shape) into its blocks.
    pub fn split(&self, t: &Tensor) -> Result<Vec<Tensor>> {
        self.blocks()
            .into_iter()
            .map(|(starts, lens)| {
                let limits: Vec<i64> = starts.iter().zip(&lens).map(|(s, l)| s + l).collect();
                t.slice(&starts, &limits, &vec![1; starts.len()])
            })
            .collect()
    }

    /// Inverse of [`Blocks::split`].
    pub fn join(&self, mut parts: Vec<Tensor>) -> Result<Tensor> {
        // Concatenating runs along the last dimension first leaves the
        // blocks of the remaining dimensions in the same order.
        for axis in (0..self.rank()).rev() {
            let n = self.pieces[axis].len();
            if n > 1 {
                parts = parts.chunks(n).map(|run| Tensor::concat(&run.iter().collect::<Vec<_>>(), axis as i64)).collect::<Result<_>>()?;
            }
        }
        debug_assert_eq!(parts.len(), 1);
        Ok(parts.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_follows_the_reference_examples() {
        assert_eq!(merge_small_dims(&[1, 2, 512, 1, 2048, 1, 3, 4], 1024), vec![1024, 2048, 12]);
        assert_eq!(merge_small_dims(&[1, 2, 768, 1, 2048], 1024), vec![2, 768, 2048]);
        assert_eq!(merge_small_dims(&[1, 1], 1024), vec![1]);
        assert_eq!(merge_small_dims(&[], 1024), Vec::<i64>::new());
        assert_eq!(merge_small_dims(&[64, 64], 4096), vec![4096]);
    }

    #[test]
    fn blocks_cover_the_shape_last_dimension_fastest() {
        let b = Blocks::new(&[6, 10], 16, 4);
        assert_eq!(b.shape, vec![6, 10]);
        let blocks = b.blocks();
        assert_eq!(blocks.len(), 6);
        assert_eq!(blocks[0], (vec![0, 0], vec![4, 4]));
        assert_eq!(blocks[2], (vec![0, 8], vec![4, 2]));
        assert_eq!(blocks[3], (vec![4, 0], vec![2, 4]));
        assert_eq!(b.statistic_sizes(), vec![4, 4, 4, 4, 4, 2, 2, 4, 2, 4, 2, 2]);
    }
}
