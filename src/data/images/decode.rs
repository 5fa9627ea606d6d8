//! Reading one image file into a square RGB image of the model resolution.

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use std::path::Path;

/// Decodes the image at `path` (format from its content, not its name),
/// then resizes its shorter side to `resolution` and center-crops it to
/// `resolution x resolution`. The error says why the file is unusable.
pub fn load_image(path: &Path, resolution: u32) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let format = image::guess_format(&bytes).map_err(|_| "not a JPEG or PNG image".to_string())?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(format!("{format:?} images are not supported (JPEG and PNG are)"));
    }
    // The JPEG decoder fills a cut-off scan with grey instead of failing, so
    // a download that stopped early would pass as a (damaged) image.
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(&bytes) {
        return Err("truncated JPEG (no end-of-image marker after the image data)".to_string());
    }
    let image = image::load_from_memory_with_format(&bytes, format).map_err(|e| format!("cannot decode: {e}"))?;
    if image.width() == 0 || image.height() == 0 {
        return Err("the image is empty".to_string());
    }
    Ok(resize_and_center_crop(&image.to_rgb8(), resolution))
}

/// Whether an end-of-image marker (FF D9) follows the first start-of-scan
/// marker (FF DA). Inside scan data every FF byte is followed by 00 or a
/// restart marker, so FF D9 there can only be the real end.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Scales the shorter side to `resolution` (Catmull-Rom), keeping the
/// aspect ratio, then cuts the centered `resolution x resolution` square.
pub fn resize_and_center_crop(image: &RgbImage, resolution: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = resolution as f64 / w.min(h) as f64;
    let (nw, nh) = if w <= h {
        (resolution, ((h as f64 * scale).round() as u32).max(resolution))
    } else {
        (((w as f64 * scale).round() as u32).max(resolution), resolution)
    };
    let resized =
        if (nw, nh) == (w, h) { image.clone() } else { image::imageops::resize(image, nw, nh, FilterType::CatmullRom) };
    let (x, y) = ((nw - resolution) / 2, (nh - resolution) / 2);
    image::imageops::crop_imm(&resized, x, y, resolution, resolution).to_image()
}
