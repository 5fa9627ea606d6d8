//! CLIP's image preprocessing as transformers' `CLIPImageProcessor` does it:
//! resize the shorter side to `size` with Pillow's bicubic filter (8-bit,
//! fixed-point, horizontal pass then vertical), center-crop to `crop_size`,
//! scale to [0, 1] and normalise with the checkpoint's mean and std. The
//! resampling follows Pillow's algorithm exactly so scores match the reference.

use crate::error::{Error, Result};
use crate::host::HostTensor;
use image::RgbImage;
use serde_json::Value;
use std::path::Path;

/// `preprocessor_config.json`'s settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    /// Target of the shorter side.
    pub size: u32,
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocessor {
    /// OpenAI CLIP's statistics for `image_size`.
    pub fn clip_default(image_size: u32) -> Preprocessor {
        Preprocessor { size: image_size, crop: image_size, mean: [0.481_454_66, 0.457_827_5, 0.408_210_73], std: [0.268_629_54, 0.261_302_58, 0.275_777_11] }
    }

    /// Reads `preprocessor_config.json`; missing keys take CLIP's defaults for `image_size`.
    pub fn load(path: &Path, image_size: u32) -> Result<Preprocessor> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {origin}"), e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{origin} is not valid JSON: {e}")))?;
        let mut p = Preprocessor::clip_default(image_size);
        // `size` is an int in older files, {"shortest_edge": n} in newer ones; likewise `crop_size`.
        let side = |key: &str, inner: &[&str]| -> Result<Option<u32>> {
            let Some(x) = v.get(key).filter(|x| !x.is_null()) else { return Ok(None) };
            let n = match x {
                Value::Object(o) => inner.iter().find_map(|k| o.get(*k)).and_then(Value::as_u64),
                other => other.as_u64(),
            };
            match n {
                Some(n) if n > 0 && n <= 16384 => Ok(Some(n as u32)),
                _ => Err(Error::Invalid(format!("{origin}: '{key}' must be a positive pixel count, got {x}"))),
            }
        };
        if let Some(s) = side("size", &["shortest_edge", "height"])? {
            p.size = s;
        }
        if let Some(s) = side("crop_size", &["height", "width"])? {
            p.crop = s;
        }
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            let Some(x) = v.get(key).filter(|x| !x.is_null()) else { return Ok(None) };
            let vals: Option<Vec<f64>> = x.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect());
            match vals {
                Some(a) if a.len() == 3 => Ok(Some([a[0] as f32, a[1] as f32, a[2] as f32])),
                _ => Err(Error::Invalid(format!("{origin}: '{key}' must be three numbers (R, G, B), got {x}"))),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            if s.iter().any(|&x| x <= 0.0) {
                return Err(Error::Invalid(format!("{origin}: 'image_std' must be positive, got {s:?}")));
            }
            p.std = s;
        }
        if p.crop > p.size {
            return Err(Error::Invalid(format!("{origin}: crop_size {} is larger than size {}", p.crop, p.size)));
        }
        Ok(p)
    }

    /// `preprocessor_config.json` for these settings (transformers' `CLIPImageProcessor`).
    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true, "size": {"shortest_edge": self.size}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": self.crop, "width": self.crop},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": self.mean, "image_std": self.std,
            "do_convert_rgb": true,
        })
    }

    /// The resized and cropped image (8-bit, as the reference hands it to normalisation).
    pub fn resize_crop(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = image.dimensions();
        // transformers: the shorter side becomes `size`, the longer `int(size * long / short)`.
        let (nw, nh) = if w <= h {
            (self.size, ((self.size as u64 * h as u64) / w as u64) as u32)
        } else {
            (((self.size as u64 * w as u64) / h as u64) as u32, self.size)
        };
        let resized = if (nw, nh) == (w, h) { image.clone() } else { pil_bicubic(image, nw, nh) };
        let (rw, rh) = resized.dimensions();
        // A side shorter than the crop is padded with black around the centered image, as transformers does.
        let mut out = RgbImage::new(self.crop, self.crop);
        let top = (rh as i64 - self.crop as i64).div_euclid(2);
        let left = (rw as i64 - self.crop as i64).div_euclid(2);
        for y in 0..self.crop as i64 {
            for x in 0..self.crop as i64 {
                let (sx, sy) = (x + left, y + top);
                if sx >= 0 && sy >= 0 && sx < rw as i64 && sy < rh as i64 {
                    out.put_pixel(x as u32, y as u32, *resized.get_pixel(sx as u32, sy as u32));
                }
            }
        }
        out
    }

    /// `[crop, crop, 3]` f32, normalised.
    pub fn pixels(&self, image: &RgbImage) -> Vec<f32> {
        let img = self.resize_crop(image);
        img.pixels().flat_map(|p| (0..3).map(move |c| (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c])).collect()
    }

    /// `[N, crop, crop, 3]` f32 for a batch of images.
    pub fn batch(&self, images: &[RgbImage]) -> HostTensor {
        let data: Vec<f32> = images.iter().flat_map(|i| self.pixels(i)).collect();
        let c = self.crop as i64;
        HostTensor::new(&[images.len() as i64, c, c, 3], &data).expect("the preprocessed batch has its shape's size")
    }
}

// ---------------------------------------------------------------- Pillow's resampling
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input index and fixed-point weights (Pillow's `precompute_coeffs`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5).trunc() as i64).max(0);
            let xmax = ((center + support + 0.5).trunc() as i64).min(in_size as i64) - xmin;
            let mut k: Vec<f64> = (0..xmax).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            let fixed = k.iter().map(|&w| if w < 0.0 { (-0.5 + w * (1u64 << PRECISION_BITS) as f64) as i64 } else { (0.5 + w * (1u64 << PRECISION_BITS) as f64) as i64 }).collect();
            (xmin as usize, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize(..., BICUBIC)` of an 8-bit RGB image.
pub fn pil_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let horizontal = if width != w {
        let cx = coefficients(w, width);
        let mut out = RgbImage::new(width, h);
        for y in 0..h {
            for (x, (start, k)) in cx.iter().enumerate() {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (i, &wt) in k.iter().enumerate() {
                    let p = image.get_pixel((start + i) as u32, y);
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * wt;
                    }
                }
                out.put_pixel(x as u32, y, image::Rgb([clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]));
            }
        }
        out
    } else {
        image.clone()
    };
    if height == h {
        return horizontal;
    }
    let cy = coefficients(h, height);
    let mut out = RgbImage::new(width, height);
    for (y, (start, k)) in cy.iter().enumerate() {
        for x in 0..width {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &wt) in k.iter().enumerate() {
                let p = horizontal.get_pixel(x, (start + i) as u32);
                for c in 0..3 {
                    acc[c] += p[c] as i64 * wt;
                }
            }
            out.put_pixel(x, y as u32, image::Rgb([clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]));
        }
    }
    out
}
