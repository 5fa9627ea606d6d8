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

/// The merged shape of a parameter, cut along each dimension into blocks of
/// `block_size` and a smaller remainder. Blocks of one shape form a regular
/// grid over a region of the tensor, a [`BlockGroup`]: there are at most
/// 2^rank groups, so a parameter's statistics are a few stacks `[count, n, n]`
/// handled by batched ops, not one slice and one product per block.
#[derive(Clone, Debug)]
pub struct Blocks {
    pub shape: Vec<i64>,
    /// Per dimension: (start, number of blocks, block side) of the full
    /// blocks, then of the remainder if there is one.
    runs: Vec<Vec<(i64, i64, i64)>>,
}

/// The blocks of one shape: `counts[d]` blocks of side `sizes[d]` along each
/// dimension d, from `start`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockGroup {
    pub start: Vec<i64>,
    pub counts: Vec<i64>,
    pub sizes: Vec<i64>,
}

impl BlockGroup {
    /// Number of blocks.
    pub fn len(&self) -> i64 {
        self.counts.iter().product()
    }
}

impl Blocks {
    pub fn new(param_shape: &[i64], merge_max_dim: i64, block_size: i64) -> Blocks {
        let shape = merge_small_dims(param_shape, merge_max_dim);
        let runs = shape
            .iter()
            .map(|&d| {
                if block_size > 0 && block_size < d {
                    let (full, rest) = (d / block_size, d % block_size);
                    let mut runs = vec![(0, full, block_size)];
                    if rest > 0 {
                        runs.push((full * block_size, 1, rest));
                    }
                    runs
                } else {
                    vec![(0, 1, d)]
                }
            })
            .collect();
        Blocks { shape, runs }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The groups, the last dimension's runs varying fastest (the order the
    /// state keeps them in).
    pub fn groups(&self) -> Vec<BlockGroup> {
        let mut out = vec![BlockGroup { start: vec![], counts: vec![], sizes: vec![] }];
        for runs in &self.runs {
            out = out
                .iter()
                .flat_map(|g| {
                    runs.iter().map(move |&(start, count, size)| {
                        let mut g = g.clone();
                        g.start.push(start);
                        g.counts.push(count);
                        g.sizes.push(size);
                        g
                    })
                })
                .collect();
        }
        out
    }

    /// Shape of each statistic, in state order: each group, then each of its
    /// dimensions: `[blocks in the group, side, side]`.
    pub fn statistic_shapes(&self) -> Vec<[i64; 3]> {
        self.groups().iter().flat_map(|g| g.sizes.iter().map(move |&n| [g.len(), n, n])).collect()
    }

    /// The blocks of `group` in `t` (in the merged shape), stacked:
    /// `[blocks, sizes...]`, blocks in row-major order of their grid.
    pub fn gather(&self, t: &Tensor, group: &BlockGroup) -> Result<Tensor> {
        let r = self.rank();
        let limits: Vec<i64> = (0..r).map(|d| group.start[d] + group.counts[d] * group.sizes[d]).collect();
        let region = t.slice(&group.start, &limits, &vec![1; r])?;
        let interleaved: Vec<i64> = (0..r).flat_map(|d| [group.counts[d], group.sizes[d]]).collect();
        let grid_first: Vec<usize> = (0..r).map(|d| 2 * d).chain((0..r).map(|d| 2 * d + 1)).collect();
        let stacked: Vec<i64> = std::iter::once(group.len()).chain(group.sizes.iter().copied()).collect();
        region.reshape(&interleaved)?.transpose(&grid_first)?.reshape(&stacked)
    }

    /// Inverse of [`Blocks::gather`] over all groups: the merged tensor from
    /// each group's stack, in [`Blocks::groups`] order.
    pub fn scatter(&self, stacks: Vec<Tensor>) -> Result<Tensor> {
        let r = self.rank();
        let mut parts = stacks
            .iter()
            .zip(self.groups())
            .map(|(x, g)| {
                let grid: Vec<i64> = g.counts.iter().chain(&g.sizes).copied().collect();
                let interleave: Vec<usize> = (0..r).flat_map(|d| [d, r + d]).collect();
                let region: Vec<i64> = (0..r).map(|d| g.counts[d] * g.sizes[d]).collect();
                x.reshape(&grid)?.transpose(&interleave)?.reshape(&region)
            })
            .collect::<Result<Vec<_>>>()?;
        // Concatenating runs along the last dimension first leaves the
        // regions of the remaining dimensions in the same order.
        for axis in (0..r).rev() {
            let n = self.runs[axis].len();
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
    fn groups_cover_the_shape_last_dimension_fastest() {
        let b = Blocks::new(&[6, 10], 16, 4);
        assert_eq!(b.shape, vec![6, 10]);
        let groups = b.groups();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0], BlockGroup { start: vec![0, 0], counts: vec![1, 2], sizes: vec![4, 4] });
        assert_eq!(groups[1], BlockGroup { start: vec![0, 8], counts: vec![1, 1], sizes: vec![4, 2] });
        assert_eq!(groups[2], BlockGroup { start: vec![4, 0], counts: vec![1, 2], sizes: vec![2, 4] });
        assert_eq!(b.statistic_shapes(), vec![[2, 4, 4], [2, 4, 4], [1, 4, 4], [1, 2, 2], [2, 2, 2], [2, 4, 4], [1, 2, 2], [1, 2, 2]]);
        let even = Blocks::new(&[8], 16, 4);
        assert_eq!(even.statistic_shapes(), vec![[2, 4, 4]]);
    }
}
