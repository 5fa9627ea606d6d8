//! Between 8-bit RGB images and f32 HWC tensors in [-1, 1] (the VQGAN's
//! pixel convention: -1 is black, 1 is full intensity).

use crate::error::{Error, Result};
use crate::host::HostTensor;
use image::RgbImage;
use std::path::Path;

/// An image as an f32 tensor `[H, W, 3]` with values in [-1, 1].
pub fn rgb_to_hwc(image: &RgbImage) -> HostTensor {
    let values: Vec<f32> = image.as_raw().iter().map(|v| *v as f32 / 127.5 - 1.0).collect();
    let (w, h) = image.dimensions();
    HostTensor::new(&[h as i64, w as i64, 3], &values).expect("an RGB image holds H * W * 3 values")
}

/// A tensor `[H, W, 3]` (or `[1, H, W, 3]`) of values in [-1, 1], of any
/// dtype, as an image; values outside the range are clamped.
pub fn hwc_to_rgb(tensor: &HostTensor) -> Result<RgbImage> {
    let shape = match tensor.shape.as_slice() {
        [1, h, w, 3] | [h, w, 3] => (*h, *w),
        other => {
            return Err(Error::Invalid(format!(
                "an image tensor must have shape [H, W, 3] or [1, H, W, 3], got {other:?}"
            )))
        }
    };
    let (h, w) = (u32::try_from(shape.0), u32::try_from(shape.1));
    let (Ok(h), Ok(w)) = (h, w) else {
        return Err(Error::Invalid(format!("image tensor of shape {:?} is too large", tensor.shape)));
    };
    let bytes: Vec<u8> = tensor.to_f64_vec().iter().map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_raw(w, h, bytes)
        .ok_or_else(|| Error::Invalid(format!("image tensor of shape {:?} has the wrong number of values", tensor.shape)))
}

/// Writes a `[H, W, 3]` tensor in [-1, 1] as a PNG file.
pub fn save_png(tensor: &HostTensor, path: &Path) -> Result<()> {
    let image = hwc_to_rgb(tensor)?;
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
}
