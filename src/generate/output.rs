//! The files of a generation: one PNG per image, a grid PNG per prompt and
//! `results.jsonl`. Nothing existing is overwritten unless asked, and every
//! file is written under a temporary name and renamed when complete.

use crate::error::{Error, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};

pub const RESULTS_FILE: &str = "results.jsonl";

/// Names of one prompt's files.
pub fn image_file(prompt: usize, candidate: usize) -> String {
    format!("{prompt:03}_{candidate:03}.png")
}

pub fn grid_file(prompt: usize) -> String {
    format!("{prompt:03}_grid.png")
}

/// An output directory that refuses to replace files unless `overwrite`.
pub struct OutputDir {
    pub dir: PathBuf,
    overwrite: bool,
}

impl OutputDir {
    /// Creates `dir` and checks up front that none of `names` exists (unless `overwrite`),
    /// so a refused run has not spent its time generating.
    pub fn prepare(dir: &Path, names: &[String], overwrite: bool) -> Result<OutputDir> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating output directory {}", dir.display()), e))?;
        if !overwrite {
            let existing: Vec<&String> = names.iter().filter(|n| dir.join(n).exists()).collect();
            if let Some(first) = existing.first() {
                return Err(Error::Invalid(format!(
                    "{} already exists ({} of the output files are there); choose another --out or pass --overwrite",
                    dir.join(first).display(),
                    existing.len()
                )));
            }
        }
        Ok(OutputDir { dir: dir.to_path_buf(), overwrite })
    }

    /// Writes `bytes` to `name` via a temporary file renamed into place.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !self.overwrite && path.exists() {
            return Err(Error::Invalid(format!("{} appeared while generating; not overwriting it", path.display())));
        }
        let tmp = self.dir.join(format!(".{name}.partial"));
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))?;
        Ok(path)
    }

    pub fn write_png(&self, name: &str, image: &RgbImage) -> Result<PathBuf> {
        self.write(name, &png_bytes(image)?)
    }
}

pub fn png_bytes(image: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| Error::Invalid(format!("encoding a PNG: {e}")))?;
    Ok(bytes.into_inner())
}

/// Images side by side in rows of `columns` (the square-most layout when
/// `None`), separated by a 2-pixel white border.
pub fn grid(images: &[RgbImage], columns: Option<usize>) -> Result<RgbImage> {
    let Some(first) = images.first() else { return Err(Error::Invalid("a grid needs at least one image".into())) };
    let (w, h) = first.dimensions();
    if images.iter().any(|i| i.dimensions() != (w, h)) {
        return Err(Error::Invalid("grid images must all have the same size".into()));
    }
    let n = images.len();
    let cols = columns.unwrap_or_else(|| (n as f64).sqrt().ceil() as usize).clamp(1, n);
    let rows = n.div_ceil(cols);
    let gap = 2;
    let mut out = RgbImage::from_pixel(cols as u32 * (w + gap) + gap, rows as u32 * (h + gap) + gap, image::Rgb([255, 255, 255]));
    for (i, img) in images.iter().enumerate() {
        let (x, y) = ((i % cols) as u32 * (w + gap) + gap, (i / cols) as u32 * (h + gap) + gap);
        image::imageops::replace(&mut out, img, x as i64, y as i64);
    }
    Ok(out)
}
