//! `convolution`: general N-d convolution with dimension numbers, padding,
//! strides, input (lhs) and kernel (rhs) dilation, feature and batch groups.
//!
//! The VJP follows the usual transposition identities: the input gradient is a
//! convolution of the cotangent with the spatially reversed kernel whose
//! feature roles are swapped (forward strides become lhs dilation), and the
//! kernel gradient is a convolution of the input with the cotangent where the
//! batch dimension is contracted (forward strides become rhs dilation, and
//! feature groups become batch groups).

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic, i64_array, i64_list, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

/// Roles of the dimensions of the three operands, as positions in each tensor.
///
/// `lhs` lists `[batch, feature, spatial...]`, `rhs` lists
/// `[output feature, input feature, spatial...]` and `out` lists
/// `[batch, feature, spatial...]`; spatial entry `i` of each refers to the same
/// spatial dimension `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub lhs: Vec<usize>,
    pub rhs: Vec<usize>,
    pub out: Vec<usize>,
}

impl ConvDims {
    /// NHWC activations, HWIO kernels, NHWC output (any number of spatial dims).
    pub fn channels_last(spatial: usize) -> ConvDims {
        let n = spatial + 2;
        let mut lhs = vec![0, n - 1];
        lhs.extend(1..=spatial);
        let mut rhs = vec![n - 1, n - 2];
        rhs.extend(0..spatial);
        ConvDims { out: lhs.clone(), lhs, rhs }
    }

    pub fn spatial(&self) -> usize {
        self.lhs.len().saturating_sub(2)
    }

    /// Swaps the first two roles of a spec (batch <-> feature, out <-> in feature).
    fn swap_first_two(spec: &[usize]) -> Vec<usize> {
        let mut s = spec.to_vec();
        s.swap(0, 1);
        s
    }
}

/// Inputs: lhs (activations) and rhs (kernel).
#[derive(Clone, Debug)]
pub struct Convolution {
    pub dims: ConvDims,
    pub strides: Vec<i64>,
    pub padding: Vec<(i64, i64)>,
    pub lhs_dilation: Vec<i64>,
    pub rhs_dilation: Vec<i64>,
    pub feature_group_count: i64,
    pub batch_group_count: i64,
}

/// Size of a dimension of `n` elements with `d - 1` holes between neighbours.
pub(crate) fn dilated(n: i64, d: i64) -> i64 {
    if n == 0 {
        0
    } else {
        1 + d * (n - 1)
    }
}

/// Output size of a window of `k` (dilated by `rd`) sliding with `stride` over
/// `n` elements dilated by `ld` and padded by `lo`/`hi`.
pub(crate) fn window_output_size(n: i64, k: i64, stride: i64, (lo, hi): (i64, i64), ld: i64, rd: i64) -> i64 {
    let padded = dilated(n, ld) + lo + hi;
    let win = dilated(k, rd);
    if padded < win {
        0
    } else {
        (padded - win) / stride + 1
    }
}

fn is_permutation(spec: &[usize], rank: usize) -> bool {
    let mut seen = vec![false; rank];
    spec.len() == rank && spec.iter().all(|&d| d < rank && !std::mem::replace(&mut seen[d], true))
}

impl Convolution {
    fn check(&self, lhs: &TensorType, rhs: &TensorType) -> Result<()> {
        let name = "convolution";
        let n = self.dims.spatial();
        if lhs.dtype != rhs.dtype {
            op_bail!(name, "input {lhs} and kernel {rhs} have different dtypes");
        }
        if lhs.dtype == DType::Bool {
            op_bail!(name, "needs numeric operands, got input {lhs} and kernel {rhs}");
        }
        if n == 0 {
            op_bail!(name, "the input dimension roles {:?} name no spatial dimension (input {lhs}, kernel {rhs})", self.dims.lhs);
        }
        if lhs.rank() != n + 2 || rhs.rank() != n + 2 {
            op_bail!(name, "input {lhs} and kernel {rhs} must both have rank {} (batch, feature and {n} spatial dimensions)", n + 2);
        }
        for (spec, what) in [(&self.dims.lhs, "input"), (&self.dims.rhs, "kernel"), (&self.dims.out, "output")] {
            if !is_permutation(spec, n + 2) {
                op_bail!(name, "{what} dimension roles {spec:?} are not a permutation of 0..{} (input {lhs}, kernel {rhs})", n + 2);
            }
        }
        for (v, what) in [(&self.strides, "strides"), (&self.lhs_dilation, "lhs_dilation"), (&self.rhs_dilation, "rhs_dilation")] {
            if v.len() != n || v.iter().any(|&s| s < 1) {
                op_bail!(name, "{what} {v:?} must hold {n} positive values (input {lhs}, kernel {rhs})");
            }
        }
        if self.padding.len() != n {
            op_bail!(name, "padding {:?} must hold {n} (low, high) pairs (input {lhs}, kernel {rhs})", self.padding);
        }
        let (fg, bg) = (self.feature_group_count, self.batch_group_count);
        if fg < 1 || bg < 1 || (fg > 1 && bg > 1) {
            op_bail!(name, "feature_group_count {fg} and batch_group_count {bg} must be >= 1 and not both > 1");
        }
        let (batch, feat) = (lhs.shape[self.dims.lhs[0]], lhs.shape[self.dims.lhs[1]]);
        let (k_out, k_in) = (rhs.shape[self.dims.rhs[0]], rhs.shape[self.dims.rhs[1]]);
        if feat % fg != 0 || k_in * fg != feat {
            op_bail!(
                name,
                "input {lhs} has {feat} features; with feature_group_count {fg} the kernel {rhs} needs {} input features, it has {k_in}",
                if fg > 0 && feat % fg == 0 { (feat / fg).to_string() } else { format!("{feat}/{fg}") }
            );
        }
        if k_out % fg != 0 || k_out % bg != 0 {
            op_bail!(name, "kernel {rhs} has {k_out} output features, not divisible by the group count {}", fg.max(bg));
        }
        if batch % bg != 0 {
            op_bail!(name, "input {lhs} has batch {batch}, not divisible by batch_group_count {bg}");
        }
        Ok(())
    }

    fn out_type(&self, lhs: &TensorType, rhs: &TensorType) -> TensorType {
        let d = &self.dims;
        let mut shape = vec![0; lhs.rank()];
        shape[d.out[0]] = lhs.shape[d.lhs[0]] / self.batch_group_count;
        shape[d.out[1]] = rhs.shape[d.rhs[0]];
        for i in 0..d.spatial() {
            shape[d.out[i + 2]] = window_output_size(
                lhs.shape[d.lhs[i + 2]],
                rhs.shape[d.rhs[i + 2]],
                self.strides[i],
                self.padding[i],
                self.lhs_dilation[i],
                self.rhs_dilation[i],
            );
        }
        lhs.with_shape(shape)
    }

    fn spatial_sizes(spec: &[usize], t: &Tensor) -> Vec<i64> {
        spec[2..].iter().map(|&d| t.shape()[d]).collect()
    }

    /// Per spatial axis, the dilated extents of the input, the kernel and the
    /// output (dilated by the strides): the sizes both VJPs derive their padding from.
    fn dilated_extents(&self, lhs: &Tensor, rhs: &Tensor, out: &Tensor) -> Vec<(i64, i64, i64)> {
        let d = &self.dims;
        let (lhs_sp, k_sp, out_sp) = (Self::spatial_sizes(&d.lhs, lhs), Self::spatial_sizes(&d.rhs, rhs), Self::spatial_sizes(&d.out, out));
        (0..d.spatial())
            .map(|i| (dilated(lhs_sp[i], self.lhs_dilation[i]), dilated(k_sp[i], self.rhs_dilation[i]), dilated(out_sp[i], self.strides[i])))
            .collect()
    }

    /// Cotangent of the input: `ct` convolved with the reversed kernel.
    fn lhs_vjp(&self, ct: &Tensor, lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
        let d = &self.dims;
        let (fg, bg) = (self.feature_group_count, self.batch_group_count);
        let mut kernel = rhs.clone();
        let mut groups = fg;
        if fg > 1 || bg > 1 {
            // Move the group factor of the output features onto the input
            // features, so the transposed convolution sees the full input width.
            let g = fg.max(bg);
            kernel = move_group_factor(&kernel, d.rhs[0], d.rhs[1], g)?;
            groups = g;
        }
        let padding: Vec<(i64, i64)> = self
            .dilated_extents(lhs, rhs, ct)
            .into_iter()
            .enumerate()
            .map(|(i, (in_d, k_d, out_d))| {
                let before = k_d - self.padding[i].0 - 1;
                let after = in_d + k_d - 1 - out_d - before;
                (before, after)
            })
            .collect();
        let spatial_axes: Vec<i64> = d.rhs[2..].iter().map(|&a| a as i64).collect();
        let flipped = kernel.reverse(&spatial_axes)?;
        let conv = Convolution {
            dims: ConvDims { lhs: d.out.clone(), rhs: ConvDims::swap_first_two(&d.rhs), out: d.lhs.clone() },
            strides: self.lhs_dilation.clone(),
            padding,
            lhs_dilation: self.strides.clone(),
            rhs_dilation: self.rhs_dilation.clone(),
            feature_group_count: groups,
            batch_group_count: 1,
        };
        let out = ct.graph().apply1(conv, &[ct, &flipped])?;
        if bg > 1 {
            // Features computed per batch group go back to their batch slots.
            return move_group_factor(&out, d.lhs[1], d.lhs[0], bg);
        }
        Ok(out)
    }

    /// Cotangent of the kernel: the input convolved with `ct`, contracting the batch.
    fn rhs_vjp(&self, ct: &Tensor, lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
        let d = &self.dims;
        let (fg, bg) = if self.batch_group_count > 1 { (self.batch_group_count, 1) } else { (1, self.feature_group_count) };
        let padding: Vec<(i64, i64)> = self
            .dilated_extents(lhs, rhs, ct)
            .into_iter()
            .enumerate()
            .map(|(i, (in_d, k_d, out_d))| {
                let lo = self.padding[i].0;
                (lo, out_d - in_d + k_d - lo - 1)
            })
            .collect();
        let conv = Convolution {
            dims: ConvDims {
                lhs: ConvDims::swap_first_two(&d.lhs),
                rhs: ConvDims::swap_first_two(&d.out),
                out: ConvDims::swap_first_two(&d.rhs),
            },
            strides: self.rhs_dilation.clone(),
            padding,
            lhs_dilation: self.lhs_dilation.clone(),
            rhs_dilation: self.strides.clone(),
            feature_group_count: fg,
            batch_group_count: bg,
        };
        lhs.graph().apply1(conv, &[lhs, ct])
    }
}

/// Splits axis `from` of `x` into `(groups, size / groups)` and merges the
/// `groups` factor into axis `into` as its major part.
fn move_group_factor(x: &Tensor, from: usize, into: usize, groups: i64) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    let r = shape.len();
    // 1. split `from` into (groups, rest): the group axis sits at `from`.
    let mut split = shape.clone();
    split[from] = shape[from] / groups;
    split.insert(from, groups);
    let y = x.reshape(&split)?;
    // 2. move the group axis right before `into` (positions after the split).
    let into_pos = if into > from { into + 1 } else { into };
    let mut perm: Vec<usize> = (0..=r).filter(|&a| a != from).collect();
    let at = perm.iter().position(|&a| a == into_pos).unwrap_or(0);
    perm.insert(at, from);
    let y = y.transpose(&perm)?;
    // 3. merge the group axis with `into`.
    let mut merged = shape;
    merged[from] /= groups;
    merged[into] *= groups;
    y.reshape(&merged)
}

impl Primitive for Convolution {
    fn name(&self) -> String {
        "convolution".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (lhs, rhs) = (&inputs[0], &inputs[1]);
        self.check(lhs, rhs)?;
        Ok(vec![self.out_type(lhs, rhs)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let d = &self.dims;
        let list = |v: &[usize]| i64_list(&v.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let dims = format!(
            "#stablehlo.conv<raw input_batch_dimension = {}, input_feature_dimension = {}, input_spatial_dimensions = {}, \
             kernel_input_feature_dimension = {}, kernel_output_feature_dimension = {}, kernel_spatial_dimensions = {}, \
             output_batch_dimension = {}, output_feature_dimension = {}, output_spatial_dimensions = {}>",
            d.lhs[0],
            d.lhs[1],
            list(&d.lhs[2..]),
            d.rhs[1],
            d.rhs[0],
            list(&d.rhs[2..]),
            d.out[0],
            d.out[1],
            list(&d.out[2..]),
        );
        let pads: Vec<String> = self.padding.iter().map(|(l, h)| format!("[{l}, {h}]")).collect();
        let attrs = format!(
            "batch_group_count = {} : i64, dimension_numbers = {dims}, feature_group_count = {} : i64, \
             lhs_dilation = {}, padding = dense<[{}]> : tensor<{}x2xi64>, rhs_dilation = {}, window_strides = {}",
            self.batch_group_count,
            self.feature_group_count,
            i64_array(&self.lhs_dilation),
            pads.join(", "),
            self.padding.len(),
            i64_array(&self.rhs_dilation),
            i64_array(&self.strides),
        );
        Ok(generic("stablehlo.convolution", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        let (lhs, rhs) = (&ins[0], &ins[1]);
        if !lhs.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        if outs[0].ty().numel() == 0 {
            // No output element depends on anything.
            return Ok(vec![Some(lhs.zeros_like()?), Some(rhs.zeros_like()?)]);
        }
        Ok(vec![Some(self.lhs_vjp(ct, lhs, rhs)?), Some(self.rhs_vjp(ct, lhs, rhs)?)])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
