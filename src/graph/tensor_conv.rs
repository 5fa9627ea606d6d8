//! Convolution, pooling and upsampling on the tensor API. Image tensors are
//! NHWC and 2-D kernels HWIO, as in flax.

use super::error::{GraphError, Result};
use super::ops::conv::{ConvDims, Convolution};
use super::ops::layout::Pad;
use super::ops::pool::ReduceWindowSum;
use super::ops::reduce::ReduceKind;
use super::tensor::Tensor;

/// `(low, high)` padding that keeps `ceil(input / stride)` outputs ("SAME").
pub fn same_padding(input: i64, kernel: i64, stride: i64, dilation: i64) -> (i64, i64) {
    let out = (input + stride - 1) / stride.max(1);
    let k = super::ops::conv::dilated(kernel, dilation);
    let total = ((out - 1) * stride + k - input).max(0);
    (total / 2, total - total / 2)
}

fn check_nhwc(x: &Tensor, op: &str) -> Result<()> {
    if x.rank() != 4 {
        return Err(GraphError::op(op, format!("needs an NHWC image batch of rank 4, got {:?}", x.ty())));
    }
    Ok(())
}

fn check_pairs(op: &str, window: &[i64], strides: &[i64], padding: &[(i64, i64)]) -> Result<()> {
    if window.len() != 2 || strides.len() != 2 || padding.len() != 2 {
        return Err(GraphError::op(
            op,
            format!("window {window:?}, strides {strides:?} and padding {padding:?} must each have 2 entries (H, W)"),
        ));
    }
    Ok(())
}

impl Tensor {
    /// General convolution of `self` (activations) with `kernel`.
    pub fn convolution(&self, kernel: &Tensor, conv: Convolution) -> Result<Tensor> {
        self.graph.apply1(conv, &[self, kernel])
    }

    /// 2-D convolution of NHWC `self` with an HWIO `kernel`.
    ///
    /// `lhs_dilation > 1` inserts holes between input pixels (a transposed
    /// convolution); `feature_group_count = C` with an `[h, w, 1, C * m]`
    /// kernel is a depthwise convolution.
    pub fn conv2d(
        &self,
        kernel: &Tensor,
        strides: &[i64],
        padding: &[(i64, i64)],
        lhs_dilation: &[i64],
        rhs_dilation: &[i64],
        feature_group_count: i64,
    ) -> Result<Tensor> {
        check_nhwc(self, "conv2d")?;
        self.convolution(
            kernel,
            Convolution {
                dims: ConvDims::channels_last(2),
                strides: strides.to_vec(),
                padding: padding.to_vec(),
                lhs_dilation: lhs_dilation.to_vec(),
                rhs_dilation: rhs_dilation.to_vec(),
                feature_group_count,
                batch_group_count: 1,
            },
        )
    }

    /// Nearest-neighbour upsampling of NHWC `self` by `factor` in H and W.
    pub fn upsample_nearest(&self, factor: i64) -> Result<Tensor> {
        check_nhwc(self, "upsample_nearest")?;
        if factor < 1 {
            return Err(GraphError::op("upsample_nearest", format!("factor must be >= 1, got {factor}")));
        }
        let s = self.shape();
        let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
        self.broadcast_in_dim(&[n, h, factor, w, factor, c], &[0, 1, 3, 5])?.reshape(&[n, h * factor, w * factor, c])
    }

    /// `upsample_nearest(2)`, the VQGAN decoder's upsampling.
    pub fn upsample_nearest2x(&self) -> Result<Tensor> {
        self.upsample_nearest(2)
    }

    /// Windowed sum over H and W of NHWC `self` (zero padding).
    pub fn sum_pool(&self, window: &[i64], strides: &[i64], padding: &[(i64, i64)]) -> Result<Tensor> {
        check_nhwc(self, "sum_pool")?;
        check_pairs("sum_pool", window, strides, padding)?;
        let prim = ReduceWindowSum {
            window: vec![1, window[0], window[1], 1],
            strides: vec![1, strides[0], strides[1], 1],
            padding: vec![(0, 0), padding[0], padding[1], (0, 0)],
            base_dilation: vec![1; 4],
            window_dilation: vec![1; 4],
        };
        let zero = self.scalar_like(0.0);
        self.graph.apply1(prim, &[self, &zero])
    }

    /// Average over H x W windows of NHWC `self`; padded zeros count towards
    /// the average (flax's `avg_pool` default).
    pub fn avg_pool(&self, window: &[i64], strides: &[i64], padding: &[(i64, i64)]) -> Result<Tensor> {
        let sum = self.sum_pool(window, strides, padding)?;
        sum.scale(1.0 / (window[0] * window[1]) as f64)
    }

    /// Maximum over H x W windows of NHWC `self`; padding never wins.
    ///
    /// Built from strided slices and `maximum`, so it is differentiable
    /// (ties pass the gradient to the first window position).
    pub fn max_pool(&self, window: &[i64], strides: &[i64], padding: &[(i64, i64)]) -> Result<Tensor> {
        check_nhwc(self, "max_pool")?;
        check_pairs("max_pool", window, strides, padding)?;
        if window.iter().chain(strides).any(|&v| v < 1) || padding.iter().any(|&(l, h)| l < 0 || h < 0) {
            return Err(GraphError::op(
                "max_pool",
                format!("window {window:?} and strides {strides:?} must be positive, padding {padding:?} non-negative"),
            ));
        }
        let lowest = self.scalar_like(ReduceKind::Max.identity(self.dtype()));
        let padded = self.graph.apply1(
            Pad { low: vec![0, padding[0].0, padding[1].0, 0], high: vec![0, padding[0].1, padding[1].1, 0], interior: vec![0; 4] },
            &[self, &lowest],
        )?;
        let ps = padded.shape().to_vec();
        if ps[1] < window[0] || ps[2] < window[1] {
            return Err(GraphError::op(
                "max_pool",
                format!("window {window:?} is larger than the padded image ({}x{}) of {:?}", ps[1], ps[2], self.ty()),
            ));
        }
        let out_h = (ps[1] - window[0]) / strides[0] + 1;
        let out_w = (ps[2] - window[1]) / strides[1] + 1;
        let mut best: Option<Tensor> = None;
        for i in 0..window[0] {
            for j in 0..window[1] {
                let start = [0, i, j, 0];
                let limit = [ps[0], i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, ps[3]];
                let tap = padded.slice(&start, &limit, &[1, strides[0], strides[1], 1])?;
                best = Some(match best {
                    None => tap,
                    Some(b) => b.maximum(&tap)?,
                });
            }
        }
        best.ok_or_else(|| GraphError::op("max_pool", "empty window"))
    }
}
