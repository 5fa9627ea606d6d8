//! LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
//! Perceptual Metric") on VGG16: unit-normalised features of five ReLU stages,
//! squared differences weighted per channel by learnt 1x1 heads, averaged
//! over space and summed over stages.
//!
//! The weights are frozen: they come from two safetensors files the user
//! provides (torchvision's `features.{i}.weight/bias` for VGG16 and the lpips
//! package's `lin{k}.model.1.weight` heads, PyTorch layouts), are converted to
//! NHWC/HWIO here and enter the training programs as arguments.

use crate::weights::load_safetensors;
use crate::error::{Error, Result};
use crate::graph::{Result as GraphResult, Tensor};
use crate::host::HostTensor;
use crate::nn::{Init, VarBuilder};
use crate::DType;
use std::collections::BTreeMap;
use std::path::Path;

/// VGG16 `features` layers: `Some(c_out)` is a 3x3 conv + ReLU, `None` a 2x2 max pool.
const VGG16: &[Option<i64>] = &[
    Some(64), Some(64), None,
    Some(128), Some(128), None,
    Some(256), Some(256), Some(256), None,
    Some(512), Some(512), Some(512), None,
    Some(512), Some(512), Some(512),
];
/// The layers after which LPIPS taps a feature map (relu1_2 .. relu5_3).
const TAPS: [usize; 5] = [1, 4, 8, 12, 16];
const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f64; 3] = [0.458, 0.448, 0.450];

/// Each conv's index in torchvision's `features` sequence (which counts the
/// ReLU and pool modules too).
fn torchvision_indices() -> Vec<usize> {
    let mut out = Vec::new();
    let mut idx = 0;
    for layer in VGG16 {
        if layer.is_some() {
            out.push(idx);
            idx += 2;
        } else {
            idx += 1;
        }
    }
    out
}

/// The frozen LPIPS network with its weights, in argument order.
pub struct Lpips {
    /// By the names [`Lpips::distance`] asks for.
    pub weights: BTreeMap<String, HostTensor>,
}

fn oihw_to_hwio(t: &HostTensor, name: &str, origin: &str) -> Result<HostTensor> {
    if t.shape.len() != 4 {
        return Err(Error::Invalid(format!("{origin}: '{name}' must be a 4-d OIHW conv weight, got shape {:?}", t.shape)));
    }
    let t = t.cast(DType::F32);
    let v = t.to_vec::<f32>()?;
    let (o, i, h, w) = (t.shape[0] as usize, t.shape[1] as usize, t.shape[2] as usize, t.shape[3] as usize);
    let mut out = vec![0f32; v.len()];
    for a in 0..o {
        for b in 0..i {
            for y in 0..h {
                for x in 0..w {
                    out[((y * w + x) * i + b) * o + a] = v[((a * i + b) * h + y) * w + x];
                }
            }
        }
    }
    Ok(HostTensor::new(&[h as i64, w as i64, i as i64, o as i64], &out)?)
}

impl Lpips {
    /// Reads the VGG16 and LPIPS-head safetensors files; every missing or
    /// misshapen tensor is an error naming it and its file.
    pub fn load(vgg16: &Path, lpips: &Path) -> Result<Lpips> {
        let vgg = load_safetensors(vgg16)?;
        let heads = load_safetensors(lpips)?;
        let (vgg_name, heads_name) = (vgg16.display().to_string(), lpips.display().to_string());
        let get = |map: &BTreeMap<String, HostTensor>, key: &str, origin: &str, shape: &[i64]| -> Result<HostTensor> {
            let t = map.get(key).ok_or_else(|| Error::Invalid(format!("{origin} has no tensor '{key}'")))?;
            if t.shape != shape {
                return Err(Error::Invalid(format!("{origin}: '{key}' has shape {:?}, expected {shape:?}", t.shape)));
            }
            Ok(t.cast(DType::F32))
        };
        let mut weights = BTreeMap::new();
        let mut c_in = 3;
        for (conv, torch_idx) in VGG16.iter().flatten().zip(torchvision_indices()) {
            let w = get(&vgg, &format!("features.{torch_idx}.weight"), &vgg_name, &[*conv, c_in, 3, 3])?;
            let b = get(&vgg, &format!("features.{torch_idx}.bias"), &vgg_name, &[*conv])?;
            weights.insert(format!("vgg16.features_{torch_idx}.kernel"), oihw_to_hwio(&w, "weight", &vgg_name)?);
            weights.insert(format!("vgg16.features_{torch_idx}.bias"), b);
            c_in = *conv;
        }
        for (k, tap) in TAPS.iter().enumerate() {
            let c = VGG16[*tap].unwrap_or(0);
            let w = get(&heads, &format!("lin{k}.model.1.weight"), &heads_name, &[1, c, 1, 1])?;
            weights.insert(format!("lpips.lin{k}.kernel"), oihw_to_hwio(&w, "weight", &heads_name)?);
        }
        Ok(Lpips { weights })
    }

    /// LPIPS distance `[N]` between NHWC images `x` and `y` in [-1, 1]; the
    /// weights are parameters of `vb` named as in [`Lpips::weights`].
    pub fn distance(vb: &VarBuilder, x: &Tensor, y: &Tensor) -> GraphResult<Tensor> {
        let n = x.dim(0)?;
        let both = Tensor::concat(&[x, y], 0)?;
        let g = both.graph();
        let shift = g.constant(HostTensor::from_f64(DType::F32, &[3], &SHIFT).map_err(|e| crate::graph::GraphError::Invalid(e.0))?);
        let scale = g.constant(HostTensor::from_f64(DType::F32, &[3], &SCALE).map_err(|e| crate::graph::GraphError::Invalid(e.0))?);
        let mut h = both.sub(&shift)?.div(&scale)?;
        let mut c_in = 3;
        let mut total: Option<Tensor> = None;
        let mut head = 0;
        let indices = torchvision_indices();
        let mut conv_i = 0;
        for (layer, spec) in VGG16.iter().enumerate() {
            match spec {
                Some(c_out) => {
                    let v = vb.pp(&format!("vgg16.features_{}", indices[conv_i]));
                    let kernel = v.get("kernel", &[3, 3, c_in, *c_out], Init::Zeros)?;
                    let bias = v.get("bias", &[*c_out], Init::Zeros)?;
                    h = h.conv2d(&kernel, &[1, 1], &[(1, 1), (1, 1)], &[1, 1], &[1, 1], 1)?.add(&bias)?;
                    h = h.maximum(&h.zeros_like()?)?;
                    c_in = *c_out;
                    conv_i += 1;
                }
                None => h = h.max_pool(&[2, 2], &[2, 2], &[(0, 0), (0, 0)])?,
            }
            if TAPS.contains(&layer) {
                let norm = h.square()?.sum(&[3], true)?.sqrt()?.add_scalar(1e-10)?;
                let unit = h.div(&norm)?;
                let diff = unit.narrow(0, 0, n)?.sub(&unit.narrow(0, n, n)?)?.square()?;
                let w = vb.get(&format!("lpips.lin{head}.kernel"), &[1, 1, c_in, 1], Init::Zeros)?;
                let scored = diff.conv2d(&w, &[1, 1], &[(0, 0), (0, 0)], &[1, 1], &[1, 1], 1)?.mean(&[1, 2, 3], false)?;
                total = Some(match total {
                    None => scored,
                    Some(t) => t.add(&scored)?,
                });
                head += 1;
            }
        }
        total.ok_or_else(|| crate::graph::GraphError::Invalid("LPIPS has no feature taps".into()))
    }
}
