//! safetensors files: reading, writing (atomically, optionally sharded) and picking a model's parameters by name.

use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::nn::ParamSpec;
use crate::DType;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn dtype_of(d: safetensors::Dtype) -> Option<DType> {
    match d {
        safetensors::Dtype::F32 => Some(DType::F32),
        safetensors::Dtype::F64 => Some(DType::F64),
        safetensors::Dtype::F16 => Some(DType::F16),
        safetensors::Dtype::BF16 => Some(DType::BF16),
        safetensors::Dtype::I32 => Some(DType::I32),
        safetensors::Dtype::I64 => Some(DType::I64),
        safetensors::Dtype::U8 => Some(DType::U8),
        _ => None,
    }
}

fn st_dtype(d: DType) -> Option<safetensors::Dtype> {
    match d {
        DType::F32 => Some(safetensors::Dtype::F32),
        DType::F64 => Some(safetensors::Dtype::F64),
        DType::F16 => Some(safetensors::Dtype::F16),
        DType::BF16 => Some(safetensors::Dtype::BF16),
        DType::I32 => Some(safetensors::Dtype::I32),
        DType::I64 => Some(safetensors::Dtype::I64),
        DType::U8 => Some(safetensors::Dtype::U8),
        _ => None,
    }
}

/// Every tensor of a safetensors blob; `origin` names it in errors.
pub fn read_safetensors(bytes: &[u8], origin: &str) -> Result<BTreeMap<String, HostTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Invalid(format!("{origin} is not a safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = dtype_of(view.dtype())
                .ok_or_else(|| Error::Invalid(format!("{origin}: tensor '{name}' has unsupported dtype {:?}", view.dtype())))?;
            let shape = view.shape().iter().map(|&d| d as i64).collect();
            Ok((name, HostTensor { dtype, shape, data: view.data().to_vec() }))
        })
        .collect()
}

/// Reads a safetensors file.
pub fn load_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    Ok(load_safetensors_with_metadata(path)?.0)
}

/// Reads a safetensors file and its string metadata.
pub fn load_safetensors_with_metadata(path: &Path) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    read_safetensors_with_metadata(&bytes, &path.display().to_string())
}

/// Every tensor of a safetensors blob and its string metadata.
pub fn read_safetensors_with_metadata(bytes: &[u8], origin: &str) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::Invalid(format!("{origin} is not a safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    Ok((read_safetensors(bytes, origin)?, meta))
}

/// Serialises named tensors to safetensors bytes.
pub fn to_safetensors(tensors: &[(String, HostTensor)]) -> Result<Vec<u8>> {
    to_safetensors_with_metadata(tensors, None)
}

pub fn to_safetensors_with_metadata(tensors: &[(String, HostTensor)], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = st_dtype(t.dtype).ok_or_else(|| Error::Invalid(format!("tensor '{name}' has dtype {} that safetensors cannot hold", t.dtype)))?;
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let view = safetensors::tensor::TensorView::new(dtype, shape, &t.data)
            .map_err(|e| Error::Invalid(format!("tensor '{name}': {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, metadata).map_err(|e| Error::Invalid(format!("serialising safetensors: {e}")))
}

/// Writes named tensors to `path` atomically (temporary file, then rename).
pub fn save_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    save_safetensors_with_metadata(path, tensors, HashMap::new())
}

/// [`save_safetensors`] with string metadata in the header.
pub fn save_safetensors_with_metadata(path: &Path, tensors: &[(String, HostTensor)], metadata: HashMap<String, String>) -> Result<()> {
    let bytes = to_safetensors_with_metadata(tensors, Some(metadata))?;
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))
}

/// The tensors of `specs` taken from `weights` in spec order; a missing
/// name or a wrong shape is an error naming the parameter and `origin`.
pub fn select_params(weights: &BTreeMap<String, HostTensor>, specs: &[ParamSpec], origin: &str) -> Result<Vec<HostTensor>> {
    specs
        .iter()
        .map(|s| {
            let t = weights.get(&s.name).ok_or_else(|| Error::Invalid(format!("{origin} has no parameter '{}'", s.name)))?;
            if t.shape != s.ty.shape {
                return Err(Error::Invalid(format!("{origin}: parameter '{}' has shape {:?}, the model needs {:?}", s.name, t.shape, s.ty.shape)));
            }
            Ok(if t.dtype == s.ty.dtype { t.clone() } else { t.cast(s.ty.dtype) })
        })
        .collect()
}
