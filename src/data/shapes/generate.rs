//! Writing a shapes dataset to a folder: `000000.png` with `000000.txt`
//! (its caption) beside it, and `captions.csv` (path,caption) for all.
//!
//! Image `i` is a pure function of (seed, i), so generation is resumable:
//! files already present with the expected caption and size are kept, and
//! every file is written under a temporary name and renamed into place, so
//! an interrupted run never leaves a half-written image behind.

use super::scene::Scene;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// What a call to [`generate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateReport {
    /// Images rendered and written by this call.
    pub written: usize,
    /// Images already present and correct, left as they were.
    pub kept: usize,
    /// The caption index written at the end.
    pub captions_csv: PathBuf,
}

/// Scene number `index` of the dataset made from `seed`.
pub fn scene_at(seed: u64, index: u64) -> Scene {
    // Splitmix-style mixing so that neighbouring (seed, index) pairs give
    // unrelated generator states.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Scene::random(&mut StdRng::seed_from_u64(z ^ (z >> 31)))
}

/// File stem of image `index`.
pub fn file_stem(index: usize) -> String {
    format!("{index:06}")
}

/// Writes images `0..n` of the dataset `seed` at `size x size` into `out_dir`.
/// Fails, naming the file, if `out_dir` holds an image of this index made
/// with another seed or size, rather than mixing two datasets.
pub fn generate(n: usize, size: u32, seed: u64, out_dir: &Path) -> Result<GenerateReport> {
    generate_where(n, size, seed, out_dir, |_| true)
}

/// Like [`generate`], keeping only the scenes `keep` accepts: image `i` of
/// the folder is the `i`-th accepted scene of the stream `seed`, so the
/// folder is still a pure function of its arguments (and resumable). Used to
/// make splits that leave some combinations out.
pub fn generate_where(n: usize, size: u32, seed: u64, out_dir: &Path, keep: impl Fn(&Scene) -> bool) -> Result<GenerateReport> {
    if size < 16 {
        return Err(Error::Invalid(format!("shapes image size must be at least 16 pixels, got {size}")));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    let mut csv = String::from("path,caption\n");
    let (mut written, mut kept) = (0, 0);
    let mut next_draw = 0u64;
    for index in 0..n {
        let scene = next_kept(seed, &mut next_draw, &keep)?;
        let caption = scene.caption();
        let stem = file_stem(index);
        let png = out_dir.join(format!("{stem}.png"));
        let txt = out_dir.join(format!("{stem}.txt"));
        if already_written(&png, &txt, &caption, size)? {
            kept += 1;
        } else {
            let image = scene.render(size);
            let tmp = out_dir.join(format!(".{stem}.png.tmp"));
            image
                .save_with_format(&tmp, image::ImageFormat::Png)
                .map_err(|e| Error::Invalid(format!("writing {}: {e}", tmp.display())))?;
            rename(&tmp, &png)?;
            write_atomically(&txt, caption.as_bytes())?;
            written += 1;
        }
        csv.push_str(&format!("{stem}.png,{}\n", csv_field(&caption)));
    }
    let captions_csv = out_dir.join("captions.csv");
    write_atomically(&captions_csv, csv.as_bytes())?;
    Ok(GenerateReport { written, kept, captions_csv })
}

/// Draws that may go by without one kept scene before the filter is judged
/// to keep (almost) nothing, rather than looping for ever.
const MAX_REJECTED_DRAWS: u64 = 100_000;

/// The next scene of the stream `seed` from draw `*next` on that `keep` accepts.
fn next_kept(seed: u64, next: &mut u64, keep: &impl Fn(&Scene) -> bool) -> Result<Scene> {
    let start = *next;
    loop {
        let scene = scene_at(seed, *next);
        *next += 1;
        if keep(&scene) {
            return Ok(scene);
        }
        if *next - start >= MAX_REJECTED_DRAWS {
            return Err(Error::Invalid(format!("the scene filter accepted none of {MAX_REJECTED_DRAWS} scenes in a row (seed {seed})")));
        }
    }
}

/// Whether `png` and `txt` already hold this image; an error if they hold
/// a different one.
fn already_written(png: &Path, txt: &Path, caption: &str, size: u32) -> Result<bool> {
    if !png.exists() || !txt.exists() {
        return Ok(false);
    }
    let existing = std::fs::read_to_string(txt).map_err(|e| Error::io(format!("reading {}", txt.display()), e))?;
    if existing != caption {
        return Err(Error::Invalid(format!(
            "{} holds the caption {existing:?} but this seed gives {caption:?}: the folder was made with another seed; use a fresh output folder",
            txt.display()
        )));
    }
    let (w, h) = image::image_dimensions(png).map_err(|e| Error::Invalid(format!("reading {}: {e}", png.display())))?;
    if (w, h) != (size, size) {
        return Err(Error::Invalid(format!(
            "{} is {w}x{h} but {size}x{size} was asked for: the folder was made with another size; use a fresh output folder",
            png.display()
        )));
    }
    Ok(true)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    rename(&tmp, path)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(format!("renaming {} to {}", from.display(), to.display()), e))
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}
