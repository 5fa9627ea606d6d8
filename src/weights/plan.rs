//! A conversion plan: for every parameter we write, where it comes from in a
//! flax file and how its layout changes. Built by each model's mapping,
//! executed one tensor at a time.

use super::msgpack::FlaxFile;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::DType;
use std::collections::{BTreeMap, BTreeSet};

/// How a source array's layout becomes ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Same,
    /// A 2-D matrix transposed (flax `[in, out]` kernels to PyTorch `[out, in]` weights).
    Transpose,
    /// A conv kernel from flax HWIO to PyTorch OIHW.
    HwioToOihw,
}

/// Where one parameter comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Dotted flax path.
    pub name: String,
    /// The layer of a stacked (`use_scan`) array.
    pub row: Option<usize>,
    pub layout: Layout,
}

/// One parameter of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: DType,
    pub source: Source,
}

/// Every output parameter in order, and the source arrays nothing uses.
#[derive(Clone, Debug)]
pub struct Plan {
    pub entries: Vec<Planned>,
    pub unused: Vec<String>,
}

impl Plan {
    /// Checks every source against `file` (present, float, the shape `expected` after the layout change)
    /// and fills in the output dtypes: `dtype`, or the source's own when `None`.
    /// `wanted` gives (our name, expected shape, source).
    pub fn build(file: &FlaxFile, wanted: Vec<(String, Vec<i64>, Source)>, dtype: Option<DType>) -> Result<Plan> {
        let origin = file.path.display();
        let mut used = BTreeSet::new();
        let mut entries = Vec::with_capacity(wanted.len());
        for (name, shape, source) in wanted {
            let a = file.arrays.get(&source.name).ok_or_else(|| {
                Error::Invalid(format!("{origin} has no array '{}' (needed for '{name}'): the checkpoint does not match its config.json", source.name))
            })?;
            if !a.dtype.is_float() {
                return Err(Error::Invalid(format!("{origin}: '{}' is {}, a parameter must be f16, bf16, f32 or f64", source.name, a.dtype)));
            }
            let mut got = a.shape.clone();
            if let Some(row) = source.row {
                if got.is_empty() || row as i64 >= got[0] {
                    return Err(Error::Invalid(format!("{origin}: '{}' has shape {:?}, it should stack a layer {row} along its first axis", source.name, a.shape)));
                }
                got.remove(0);
            }
            let got = transformed_shape(&got, source.layout);
            if got != shape {
                return Err(Error::Invalid(format!(
                    "{origin}: '{}' has shape {:?}{}, the config needs {:?} for '{name}'",
                    source.name,
                    a.shape,
                    source.row.map(|r| format!(" (layer {r})")).unwrap_or_default(),
                    untransformed_shape(&shape, source.layout, source.row.map(|_| a.shape[0]))
                )));
            }
            used.insert(source.name.clone());
            entries.push(Planned { name, shape, dtype: dtype.unwrap_or(a.dtype), source });
        }
        let unused = file.arrays.keys().filter(|k| !used.contains(*k)).cloned().chain(file.other_leaves.iter().cloned()).collect();
        Ok(Plan { entries, unused })
    }

    pub fn entry(&self, name: &str) -> Option<&Planned> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Total bytes of the output tensors.
    pub fn byte_len(&self) -> u64 {
        self.entries.iter().map(|e| e.shape.iter().product::<i64>() as u64 * e.dtype.size_in_bytes() as u64).sum()
    }

    /// Reads, re-lays-out and converts one planned tensor.
    pub fn fetch(&self, file: &FlaxFile, entry: &Planned) -> Result<HostTensor> {
        let s = &entry.source;
        let t = match s.row {
            Some(r) => file.read_row(&s.name, r)?,
            None => file.read(&s.name)?,
        };
        let t = if s.layout == Layout::Same { t } else { relayout(&t, s.layout) };
        Ok(if t.dtype == entry.dtype { t } else { t.cast(entry.dtype) })
    }

    /// Every planned tensor, in memory.
    pub fn load_all(&self, file: &FlaxFile) -> Result<BTreeMap<String, HostTensor>> {
        self.entries.iter().map(|e| Ok((e.name.clone(), self.fetch(file, e)?))).collect()
    }
}

fn transformed_shape(shape: &[i64], layout: Layout) -> Vec<i64> {
    match (layout, shape) {
        (Layout::Transpose, [a, b]) => vec![*b, *a],
        (Layout::HwioToOihw, [h, w, i, o]) => vec![*o, *i, *h, *w],
        // A wrong rank stays as it is and fails the shape comparison.
        _ => shape.to_vec(),
    }
}

fn untransformed_shape(shape: &[i64], layout: Layout, stacked: Option<i64>) -> Vec<i64> {
    let mut s = match (layout, shape) {
        (Layout::Transpose, [a, b]) => vec![*b, *a],
        (Layout::HwioToOihw, [o, i, h, w]) => vec![*h, *w, *i, *o],
        _ => shape.to_vec(),
    };
    if let Some(n) = stacked {
        s.insert(0, n);
    }
    s
}

/// Applies a layout change to a tensor's bytes (element size preserved).
pub fn relayout(t: &HostTensor, layout: Layout) -> HostTensor {
    let perm: &[usize] = match (layout, t.shape.len()) {
        (Layout::Transpose, 2) => &[1, 0],
        (Layout::HwioToOihw, 4) => &[3, 2, 0, 1],
        _ => return t.clone(),
    };
    permute(t, perm)
}

/// The inverse of [`relayout`].
#[cfg(test)]
pub fn undo_layout(t: &HostTensor, layout: Layout) -> HostTensor {
    let perm: &[usize] = match (layout, t.shape.len()) {
        (Layout::Transpose, 2) => &[1, 0],
        (Layout::HwioToOihw, 4) => &[2, 3, 1, 0],
        _ => return t.clone(),
    };
    permute(t, perm)
}

/// `out.shape[k] = in.shape[perm[k]]`, moving whole elements.
fn permute(t: &HostTensor, perm: &[usize]) -> HostTensor {
    let rank = t.shape.len();
    let item = t.dtype.size_in_bytes();
    let shape: Vec<i64> = perm.iter().map(|&p| t.shape[p]).collect();
    let mut in_strides = vec![1usize; rank];
    for k in (0..rank.saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * t.shape[k + 1] as usize;
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n: usize = shape.iter().product::<i64>() as usize;
    let mut data = vec![0u8; n * item];
    let mut index = vec![0usize; rank];
    for o in 0..n {
        let src: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        data[o * item..(o + 1) * item].copy_from_slice(&t.data[src * item..(src + 1) * item]);
        for k in (0..rank).rev() {
            index[k] += 1;
            if index[k] < shape[k] as usize {
                break;
            }
            index[k] = 0;
        }
    }
    HostTensor { dtype: t.dtype, shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_conv_layouts_invert() {
        let t = HostTensor::new(&[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let r = relayout(&t, Layout::Transpose);
        assert_eq!(r.shape, vec![3, 2]);
        assert_eq!(r.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(undo_layout(&r, Layout::Transpose), t);
        let v: Vec<f32> = (0..2 * 3 * 4 * 5).map(|x| x as f32).collect();
        let k = HostTensor::new(&[2, 3, 4, 5], &v).unwrap();
        let o = relayout(&k, Layout::HwioToOihw);
        assert_eq!(o.shape, vec![5, 4, 2, 3]);
        // out[o, i, h, w] = in[h, w, i, o]
        let at = |h: usize, w: usize, i: usize, oo: usize| v[((h * 3 + w) * 4 + i) * 5 + oo];
        assert_eq!(o.to_vec::<f32>().unwrap()[((1 * 4 + 2) * 2 + 1) * 3 + 2], at(1, 2, 2, 1));
        assert_eq!(undo_layout(&o, Layout::HwioToOihw), k);
    }
}
