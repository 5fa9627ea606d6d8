//! Indexing primitives: gather, scatter-add, dynamic slices, and the model-facing
//! helpers built on them (`take`, `take_along_axis`, `one_hot`).
//!
//! Index semantics follow XLA throughout: start indices are clamped so that the
//! gathered or updated window lies inside the operand. There is no wrap-around
//! of negative indices as in numpy; a negative index reads the first element.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, GraphError, Result};
use crate::graph::primitive::{generic, generic_with_regions, i64_array, i64_list, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::host::HostTensor;
use crate::DType;
use std::any::Any;

macro_rules! impl_any {
    () => {
        fn as_any(&self) -> &dyn Any {
            self
        }
    };
}

fn as_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// Strictly increasing and below `bound`.
fn sorted_below(v: &[usize], bound: usize) -> bool {
    v.iter().all(|&d| d < bound) && v.windows(2).all(|w| w[0] < w[1])
}

/// Distinct and below `bound`.
fn distinct_below(v: &[usize], bound: usize) -> bool {
    v.iter().enumerate().all(|(i, &d)| d < bound && !v[..i].contains(&d))
}

/// The batch shape of `indices` (every dimension but the index vector one) and the
/// length of each index vector (1 when `index_vector_dim` is the implicit trailing one).
fn index_batch(op: &str, indices: &TensorType, index_vector_dim: usize) -> Result<(Vec<i64>, i64)> {
    if !indices.dtype.is_int() {
        op_bail!(op, "indices must be integers, got {indices}");
    }
    if index_vector_dim > indices.rank() {
        op_bail!(op, "index_vector_dim {index_vector_dim} is out of range for indices {indices}");
    }
    let mut batch = indices.shape.clone();
    let n = if index_vector_dim < indices.rank() { batch.remove(index_vector_dim) } else { 1 };
    Ok((batch, n))
}

/// `GatherDims` as in the StableHLO spec (without batching dimensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherDims {
    /// Output dimensions holding the slice (the non-collapsed operand dimensions, in order).
    pub offset_dims: Vec<usize>,
    /// Operand dimensions whose size-1 slice dimension is dropped from the output.
    pub collapsed_slice_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub start_index_map: Vec<usize>,
    /// Dimension of `indices` holding index vectors (`rank` for an implicit trailing 1).
    pub index_vector_dim: usize,
}

/// Inputs: operand and integer start indices. Slices of `slice_sizes` are taken at
/// each index vector, which XLA clamps to `[0, operand_dim - slice_size]`.
#[derive(Debug)]
pub struct Gather {
    pub dims: GatherDims,
    pub slice_sizes: Vec<i64>,
}

impl Primitive for Gather {
    fn name(&self) -> String {
        "gather".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, idx) = (&inputs[0], &inputs[1]);
        let d = &self.dims;
        let r = x.rank();
        let (batch, n) = index_batch("gather", idx, d.index_vector_dim)?;
        if n != d.start_index_map.len() as i64 {
            op_bail!("gather", "indices {idx} hold index vectors of length {n}, but start_index_map {:?} has {}", d.start_index_map, d.start_index_map.len());
        }
        if !distinct_below(&d.start_index_map, r) {
            op_bail!("gather", "start_index_map {:?} must name distinct dimensions of {x}", d.start_index_map);
        }
        if !sorted_below(&d.collapsed_slice_dims, r) {
            op_bail!("gather", "collapsed_slice_dims {:?} must be increasing dimensions of {x}", d.collapsed_slice_dims);
        }
        if self.slice_sizes.len() != r {
            op_bail!("gather", "slice_sizes {:?} need {r} entries for {x}", self.slice_sizes);
        }
        for (dim, (&s, &size)) in self.slice_sizes.iter().zip(&x.shape).enumerate() {
            if s < 0 || s > size {
                op_bail!("gather", "slice size {s} of dimension {dim} does not fit {x}");
            }
        }
        if let Some(c) = d.collapsed_slice_dims.iter().find(|&&c| self.slice_sizes[c] != 1) {
            op_bail!("gather", "collapsed dimension {c} needs slice size 1, got {}", self.slice_sizes[*c]);
        }
        let window: Vec<i64> = (0..r).filter(|k| !d.collapsed_slice_dims.contains(k)).map(|k| self.slice_sizes[k]).collect();
        let out_rank = batch.len() + window.len();
        if d.offset_dims.len() != window.len() || !sorted_below(&d.offset_dims, out_rank) {
            op_bail!(
                "gather",
                "offset_dims {:?} must be {} increasing dimensions of the rank-{out_rank} output",
                d.offset_dims,
                window.len()
            );
        }
        let (mut w, mut b) = (window.into_iter(), batch.into_iter());
        let shape = (0..out_rank).map(|o| if d.offset_dims.contains(&o) { w.next() } else { b.next() }).map(|s| s.unwrap_or(0)).collect();
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let d = &self.dims;
        let mut fields = Vec::new();
        for (name, v) in [("offset_dims", &d.offset_dims), ("collapsed_slice_dims", &d.collapsed_slice_dims), ("start_index_map", &d.start_index_map)] {
            if !v.is_empty() {
                fields.push(format!("{name} = {}", i64_list(&as_i64(v))));
            }
        }
        fields.push(format!("index_vector_dim = {}", d.index_vector_dim));
        let attrs = format!(
            "dimension_numbers = #stablehlo.gather<{}>, slice_sizes = {}, indices_are_sorted = false",
            fields.join(", "),
            i64_array(&self.slice_sizes)
        );
        Ok(generic("stablehlo.gather", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (x, idx) = (&ins[0], &ins[1]);
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        let d = &self.dims;
        // Gather clamps start indices but scatter drops out-of-range windows; clamping
        // here makes the scatter add to exactly the elements the gather read.
        let bounds: Vec<i64> = d.start_index_map.iter().map(|&k| x.shape()[k] - self.slice_sizes[k]).collect();
        let idx = clamp_indices(idx, d.index_vector_dim, &bounds)?;
        let scatter_dims = ScatterDims {
            update_window_dims: d.offset_dims.clone(),
            inserted_window_dims: d.collapsed_slice_dims.clone(),
            scatter_dims_to_operand_dims: d.start_index_map.clone(),
            index_vector_dim: d.index_vector_dim,
        };
        Ok(vec![Some(x.zeros_like()?.scatter_add(&idx, ct, scatter_dims)?), None])
    }
    impl_any!();
}

/// The per-component upper bounds `bounds` as a tensor shaped like `indices`.
fn bounds_like(indices: &Tensor, index_vector_dim: usize, bounds: &[i64]) -> Result<Tensor> {
    let values: Vec<f64> = bounds.iter().map(|&b| b as f64).collect();
    let host = HostTensor::from_f64(indices.dtype(), &[values.len() as i64], &values)
        .map_err(|e| GraphError::Invalid(format!("index bounds {bounds:?}: {e}")))?;
    let c = indices.graph().constant(host);
    if index_vector_dim < indices.rank() {
        c.broadcast_in_dim(indices.shape(), &[index_vector_dim])
    } else {
        c.reshape(&[])?.broadcast_to(indices.shape())
    }
}

/// Indices clamped to `[0, bound]` per index-vector component.
fn clamp_indices(indices: &Tensor, index_vector_dim: usize, bounds: &[i64]) -> Result<Tensor> {
    let hi = bounds_like(indices, index_vector_dim, bounds)?;
    indices.maximum(&indices.zeros_like()?)?.minimum(&hi)
}

/// Per index vector: whether every component lies in `[0, bound]` (shape: the batch shape).
fn indices_in_bounds(indices: &Tensor, index_vector_dim: usize, bounds: &[i64]) -> Result<Tensor> {
    let hi = bounds_like(indices, index_vector_dim, bounds)?;
    let ok = indices.ge(&indices.zeros_like()?)?.and(&indices.le(&hi)?)?;
    if index_vector_dim < indices.rank() {
        ok.all(&[index_vector_dim as i64], false)
    } else {
        Ok(ok)
    }
}

/// `ScatterDims` as in the StableHLO spec (without batching dimensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScatterDims {
    /// Dimensions of `updates` forming the window written at each index.
    pub update_window_dims: Vec<usize>,
    /// Operand dimensions with a size-1 window that `updates` leaves out.
    pub inserted_window_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub scatter_dims_to_operand_dims: Vec<usize>,
    /// Dimension of `indices` holding index vectors (`rank` for an implicit trailing 1).
    pub index_vector_dim: usize,
}

/// Inputs: operand, integer indices, updates. Adds each update window into the
/// operand at its index; repeated indices accumulate. Unlike gather, XLA does not
/// clamp here: a window that would leave the operand is dropped.
#[derive(Debug)]
pub struct ScatterAdd {
    pub dims: ScatterDims,
}

impl ScatterAdd {
    /// Size of the update window along each operand dimension.
    fn window_sizes(&self, x: &TensorType, updates: &TensorType) -> Vec<i64> {
        let mut w = self.dims.update_window_dims.iter();
        (0..x.rank())
            .map(|k| if self.dims.inserted_window_dims.contains(&k) { 1 } else { w.next().map(|&u| updates.shape[u]).unwrap_or(0) })
            .collect()
    }
}

impl Primitive for ScatterAdd {
    fn name(&self) -> String {
        "scatter_add".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, idx, u) = (&inputs[0], &inputs[1], &inputs[2]);
        let d = &self.dims;
        let r = x.rank();
        if u.dtype != x.dtype || x.dtype == DType::Bool {
            op_bail!("scatter_add", "updates {u} must have the numeric dtype of the operand {x}");
        }
        let (batch, n) = index_batch("scatter_add", idx, d.index_vector_dim)?;
        if n != d.scatter_dims_to_operand_dims.len() as i64 {
            op_bail!(
                "scatter_add",
                "indices {idx} hold index vectors of length {n}, but scatter_dims_to_operand_dims {:?} has {}",
                d.scatter_dims_to_operand_dims,
                d.scatter_dims_to_operand_dims.len()
            );
        }
        if !distinct_below(&d.scatter_dims_to_operand_dims, r) {
            op_bail!("scatter_add", "scatter_dims_to_operand_dims {:?} must name distinct dimensions of {x}", d.scatter_dims_to_operand_dims);
        }
        if !sorted_below(&d.inserted_window_dims, r) {
            op_bail!("scatter_add", "inserted_window_dims {:?} must be increasing dimensions of {x}", d.inserted_window_dims);
        }
        if d.update_window_dims.len() + d.inserted_window_dims.len() != r || !sorted_below(&d.update_window_dims, u.rank()) {
            op_bail!(
                "scatter_add",
                "update_window_dims {:?} must be {} increasing dimensions of updates {u}",
                d.update_window_dims,
                r - d.inserted_window_dims.len().min(r)
            );
        }
        let update_batch: Vec<i64> = (0..u.rank()).filter(|k| !d.update_window_dims.contains(k)).map(|k| u.shape[k]).collect();
        if update_batch != batch {
            op_bail!("scatter_add", "updates {u} have scatter dimensions {update_batch:?}, but indices {idx} have {batch:?}");
        }
        let window = self.window_sizes(x, u);
        if let Some(k) = (0..r).find(|&k| window[k] > x.shape[k]) {
            op_bail!("scatter_add", "update window {window:?} does not fit dimension {k} of {x}");
        }
        Ok(vec![x.clone()])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let d = &self.dims;
        let mut fields = Vec::new();
        for (name, v) in [
            ("update_window_dims", &d.update_window_dims),
            ("inserted_window_dims", &d.inserted_window_dims),
            ("scatter_dims_to_operand_dims", &d.scatter_dims_to_operand_dims),
        ] {
            if !v.is_empty() {
                fields.push(format!("{name} = {}", i64_list(&as_i64(v))));
            }
        }
        fields.push(format!("index_vector_dim = {}", d.index_vector_dim));
        let attrs = format!(
            "scatter_dimension_numbers = #stablehlo.scatter<{}>, indices_are_sorted = false, unique_indices = false",
            fields.join(", ")
        );
        let region = cx.scalar_region("stablehlo.add", &TensorType::scalar(ins[0].dtype));
        Ok(generic_with_regions("stablehlo.scatter", args, ins, outs, &attrs, &[region]))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (x, idx, u) = (&ins[0], &ins[1], &ins[2]);
        let Some(ct) = &cts[0] else { return Ok(vec![None, None, None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None, None, None]);
        }
        let d = &self.dims;
        let window = self.window_sizes(x.ty(), u.ty());
        let gather_dims = GatherDims {
            offset_dims: d.update_window_dims.clone(),
            collapsed_slice_dims: d.inserted_window_dims.clone(),
            start_index_map: d.scatter_dims_to_operand_dims.clone(),
            index_vector_dim: d.index_vector_dim,
        };
        let read = ct.gather(idx, gather_dims, &window)?;
        // Dropped windows contributed nothing, so their updates get no gradient
        // (the gather alone would clamp and read a neighbouring window).
        let bounds: Vec<i64> = d.scatter_dims_to_operand_dims.iter().map(|&k| x.shape()[k] - window[k]).collect();
        let ok = indices_in_bounds(idx, d.index_vector_dim, &bounds)?;
        let scatter_dims: Vec<usize> = (0..u.rank()).filter(|k| !d.update_window_dims.contains(k)).collect();
        let ok = ok.broadcast_in_dim(u.shape(), &scatter_dims)?;
        let du = Tensor::select(&ok, &read, &read.zeros_like()?)?;
        Ok(vec![Some(ct.clone()), None, Some(du)])
    }
    impl_any!();
}

/// Inputs: operand, then one scalar integer start per dimension (clamped to
/// `[0, dim - size]`).
#[derive(Debug)]
pub struct DynamicSlice {
    pub sizes: Vec<i64>,
}

/// Checks that `starts` are `rank` scalar integers of one dtype.
fn check_starts(op: &str, x: &TensorType, starts: &[TensorType]) -> Result<()> {
    if starts.len() != x.rank() {
        op_bail!(op, "needs {} start indices for {x}, got {}", x.rank(), starts.len());
    }
    for (i, s) in starts.iter().enumerate() {
        if s.rank() != 0 || !s.dtype.is_int() || s.dtype != starts[0].dtype {
            op_bail!(op, "start index {i} must be an integer scalar of the same dtype as the others, got {s}");
        }
    }
    Ok(())
}

impl Primitive for DynamicSlice {
    fn name(&self) -> String {
        "dynamic_slice".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        check_starts("dynamic_slice", x, &inputs[1..])?;
        if self.sizes.len() != x.rank() || self.sizes.iter().zip(&x.shape).any(|(&s, &n)| s < 0 || s > n) {
            op_bail!("dynamic_slice", "slice sizes {:?} do not fit {x}", self.sizes);
        }
        Ok(vec![x.with_shape(self.sizes.clone())])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.dynamic_slice", args, ins, outs, &format!("slice_sizes = {}", i64_array(&self.sizes))))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = vec![None; ins.len()];
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(out) };
        if x.dtype().is_float() {
            let starts: Vec<&Tensor> = ins[1..].iter().collect();
            // Both ops clamp the starts the same way, so the cotangent lands where the slice was read.
            out[0] = Some(x.zeros_like()?.dynamic_update_slice(ct, &starts)?);
        }
        Ok(out)
    }
    impl_any!();
}

/// Inputs: operand, update, then one scalar integer start per dimension (clamped
/// to `[0, dim - update_dim]`).
#[derive(Debug)]
pub struct DynamicUpdateSlice;

impl Primitive for DynamicUpdateSlice {
    fn name(&self) -> String {
        "dynamic_update_slice".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, u) = (&inputs[0], &inputs[1]);
        check_starts("dynamic_update_slice", x, &inputs[2..])?;
        if u.dtype != x.dtype || u.rank() != x.rank() || u.shape.iter().zip(&x.shape).any(|(a, b)| a > b) {
            op_bail!("dynamic_update_slice", "update {u} does not fit into {x}");
        }
        Ok(vec![x.clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.dynamic_update_slice", args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = vec![None; ins.len()];
        let (Some(ct), x, u) = (&cts[0], &ins[0], &ins[1]) else { return Ok(out) };
        if !x.dtype().is_float() {
            return Ok(out);
        }
        let starts: Vec<&Tensor> = ins[2..].iter().collect();
        out[0] = Some(ct.dynamic_update_slice(&u.zeros_like()?, &starts)?);
        out[1] = Some(ct.dynamic_slice(&starts, u.shape())?);
        Ok(out)
    }
    impl_any!();
}

impl Tensor {
    /// The general StableHLO gather: a `slice_sizes` window of `self` at every
    /// index vector of `indices`. Starts are clamped so the window fits.
    pub fn gather(&self, indices: &Tensor, dims: GatherDims, slice_sizes: &[i64]) -> Result<Tensor> {
        self.graph.apply1(Gather { dims, slice_sizes: slice_sizes.to_vec() }, &[self, indices])
    }

    /// `self` plus `updates` added at `indices` (repeated indices accumulate;
    /// windows reaching outside `self` are dropped).
    pub fn scatter_add(&self, indices: &Tensor, updates: &Tensor, dims: ScatterDims) -> Result<Tensor> {
        self.graph.apply1(ScatterAdd { dims }, &[self, indices, updates])
    }

    /// Slices of `self` along `axis` at integer `indices` of any shape, as numpy's
    /// `take`: the result has shape `self.shape[..axis] + indices.shape +
    /// self.shape[axis+1..]`. For an embedding table `[vocab, dim]` and ids
    /// `[batch, len]`, `table.take(ids, 0)` is `[batch, len, dim]`.
    ///
    /// Out-of-range ids are clamped as XLA's gather does: an id below 0 reads
    /// row 0 and an id at or above `vocab` reads row `vocab - 1` (no error is
    /// possible inside a compiled program, and negative ids do not wrap).
    pub fn take(&self, indices: &Tensor, axis: i64) -> Result<Tensor> {
        let a = self.axis(axis).map_err(|e| GraphError::op("take", e.to_string()))?;
        if !indices.dtype().is_int() {
            return Err(GraphError::op("take", format!("indices must be integers, got {:?}", indices.ty())));
        }
        if self.shape()[a] == 0 {
            return Err(GraphError::op("take", format!("cannot take from the empty axis {axis} of {:?}", self.ty())));
        }
        let (r, k) = (self.rank(), indices.rank());
        let mut slice_sizes = self.shape().to_vec();
        slice_sizes[a] = 1;
        let offset_dims: Vec<usize> = (0..a).chain(a + k..r - 1 + k).collect();
        let dims = GatherDims { offset_dims, collapsed_slice_dims: vec![a], start_index_map: vec![a], index_vector_dim: k };
        self.gather(indices, dims, &slice_sizes)
    }

    /// `out[i0, .., ia, ..] = self[i0, .., indices[i0, .., ia, ..], ..]` along
    /// `axis`, as numpy's `take_along_axis`: `indices` has the rank of `self` and
    /// the same size in every other dimension. Out-of-range indices are clamped
    /// to `[0, dim - 1]`.
    pub fn take_along_axis(&self, indices: &Tensor, axis: i64) -> Result<Tensor> {
        let a = self.axis(axis).map_err(|e| GraphError::op("take_along_axis", e.to_string()))?;
        let same_elsewhere = indices.rank() == self.rank() && (0..self.rank()).all(|d| d == a || indices.shape()[d] == self.shape()[d]);
        if !same_elsewhere || !indices.dtype().is_int() {
            return Err(GraphError::op(
                "take_along_axis",
                format!("indices {:?} must be integers of the shape of {:?} outside axis {axis}", indices.ty(), self.ty()),
            ));
        }
        if self.shape()[a] == 0 {
            return Err(GraphError::op("take_along_axis", format!("cannot take from the empty axis {axis} of {:?}", self.ty())));
        }
        // A full index vector per output element: iota in every dimension but `axis`.
        let r = self.rank();
        let mut vec_shape = indices.shape().to_vec();
        vec_shape.push(1);
        let parts: Vec<Tensor> = (0..r)
            .map(|d| if d == a { indices.reshape(&vec_shape) } else { self.graph.iota(indices.dtype(), &vec_shape, d) })
            .collect::<Result<_>>()?;
        let full = Tensor::concat(&parts.iter().collect::<Vec<_>>(), r as i64)?;
        let dims = GatherDims {
            offset_dims: vec![],
            collapsed_slice_dims: (0..r).collect(),
            start_index_map: (0..r).collect(),
            index_vector_dim: r,
        };
        self.gather(&full, dims, &vec![1; r])
    }

    /// `[..., depth]` of `dtype` with a 1 at each label and 0 elsewhere; labels
    /// outside `[0, depth)` give an all-zero row.
    pub fn one_hot(labels: &Tensor, depth: i64, dtype: DType) -> Result<Tensor> {
        if !labels.dtype().is_int() {
            return Err(GraphError::op("one_hot", format!("labels must be integers, got {:?}", labels.ty())));
        }
        if depth <= 0 {
            return Err(GraphError::op("one_hot", format!("depth must be positive, got {depth} for labels {:?}", labels.ty())));
        }
        let mut shape = labels.shape().to_vec();
        shape.push(depth);
        let classes = labels.graph.iota(labels.dtype(), &shape, labels.rank())?;
        classes.eq(&labels.unsqueeze(-1)?)?.cast(dtype)
    }

    /// A `sizes` window of `self` starting at the scalar integer `starts`, which
    /// are clamped to `[0, dim - size]` so the window always fits.
    pub fn dynamic_slice(&self, starts: &[&Tensor], sizes: &[i64]) -> Result<Tensor> {
        let starts = same_start_dtype(starts)?;
        let mut inputs = vec![self];
        inputs.extend(starts.iter());
        self.graph.apply1(DynamicSlice { sizes: sizes.to_vec() }, &inputs)
    }

    /// `self` with `update` written at the scalar integer `starts`, clamped to
    /// `[0, dim - update_dim]`.
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[&Tensor]) -> Result<Tensor> {
        let starts = same_start_dtype(starts)?;
        let mut inputs = vec![self, update];
        inputs.extend(starts.iter());
        self.graph.apply1(DynamicUpdateSlice, &inputs)
    }

    /// Entry `index` (a scalar integer, clamped) along the first axis, that
    /// axis removed: layer `index` of a `[layers, ...]` stack.
    pub fn dynamic_index(&self, index: &Tensor) -> Result<Tensor> {
        let zero = index.zeros_like()?;
        let mut starts = vec![index];
        starts.extend(std::iter::repeat(&zero).take(self.rank().saturating_sub(1)));
        let mut sizes = self.shape().to_vec();
        if let Some(first) = sizes.first_mut() {
            *first = 1;
        }
        self.dynamic_slice(&starts, &sizes)?.squeeze(0)
    }

    /// `self` with entry `index` along the first axis replaced by `value`
    /// (whose shape is that of an entry): the inverse of [`dynamic_index`](Self::dynamic_index).
    pub fn dynamic_update_index(&self, index: &Tensor, value: &Tensor) -> Result<Tensor> {
        let zero = index.zeros_like()?;
        let mut starts = vec![index];
        starts.extend(std::iter::repeat(&zero).take(value.rank()));
        self.dynamic_update_slice(&value.unsqueeze(0)?, &starts)
    }
}

/// StableHLO needs all start indices of one dtype: integer starts are cast to
/// the first one's dtype (the primitive's shape rule rejects the rest).
fn same_start_dtype(starts: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = starts.first() else { return Ok(vec![]) };
    let dtype = first.dtype();
    starts.iter().map(|s| if s.dtype().is_int() { s.cast(dtype) } else { Ok((*s).clone()) }).collect()
}
