//! The list of (image, caption) pairs of a dataset, from a folder or a CSV.

use super::csv;
use super::loader::{SkipReason, Skipped};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub path: PathBuf,
    pub caption: String,
}

/// The dataset's records in a fixed order (sorted paths for folders, file
/// order for CSVs), plus the entries left out while listing them.
#[derive(Clone, Debug, Default)]
pub struct ImageIndex {
    pub records: Vec<ImageRecord>,
    /// Images without a caption (a missing or empty `.txt`).
    pub skipped: Vec<Skipped>,
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

impl ImageIndex {
    /// A folder (searched recursively) or a `.csv` file of `path,caption`.
    pub fn open(source: &Path) -> Result<ImageIndex> {
        if source.is_dir() {
            return ImageIndex::from_folder(source);
        }
        match source.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => ImageIndex::from_csv(source),
            Some("parquet") => Err(Error::Invalid(format!(
                "{}: parquet image lists are not supported; use a folder or a CSV of path,caption",
                source.display()
            ))),
            _ if !source.exists() => Err(Error::Invalid(format!("image dataset {} does not exist", source.display()))),
            _ => Err(Error::Invalid(format!(
                "image dataset {} is neither a folder nor a .csv file of path,caption",
                source.display()
            ))),
        }
    }

    /// Every JPEG and PNG under `dir`, each with the caption in the `.txt`
    /// file of the same name beside it.
    pub fn from_folder(dir: &Path) -> Result<ImageIndex> {
        let mut images = Vec::new();
        collect_images(dir, &mut images)?;
        images.sort();
        let mut index = ImageIndex::default();
        for path in images {
            let caption_path = path.with_extension("txt");
            match std::fs::read_to_string(&caption_path) {
                Ok(text) if !text.trim().is_empty() => {
                    index.records.push(ImageRecord { path, caption: text.trim().to_string() })
                }
                Ok(_) => index.skipped.push(Skipped { path, reason: SkipReason::MissingCaption("its caption file is empty".into()) }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => index.skipped.push(Skipped {
                    path,
                    reason: SkipReason::MissingCaption(format!("no caption file {}", caption_path.display())),
                }),
                Err(e) => index.skipped.push(Skipped {
                    path,
                    reason: SkipReason::MissingCaption(format!("cannot read {}: {e}", caption_path.display())),
                }),
            }
        }
        Ok(index)
    }

    /// A CSV with a header naming a `path` and a `caption` column (other
    /// columns are ignored); relative paths are relative to the CSV's folder.
    pub fn from_csv(file: &Path) -> Result<ImageIndex> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        let records = csv::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?;
        let Some((header, rows)) = records.split_first() else {
            return Err(Error::Invalid(format!("{} is empty; it needs a header line path,caption", file.display())));
        };
        let column = |name: &str| {
            header.fields.iter().position(|f| f.trim().eq_ignore_ascii_case(name)).ok_or_else(|| {
                Error::Invalid(format!("{}: the header {:?} has no {name:?} column", file.display(), header.fields))
            })
        };
        let (path_column, caption_column) = (column("path")?, column("caption")?);
        let base = file.parent().unwrap_or(Path::new("."));
        let mut index = ImageIndex::default();
        for row in rows {
            let Some(path) = row.fields.get(path_column).map(|p| p.trim()).filter(|p| !p.is_empty()) else {
                return Err(Error::Invalid(format!("{} line {}: no image path", file.display(), row.line)));
            };
            let path = base.join(path);
            match row.fields.get(caption_column).map(|c| c.trim()).filter(|c| !c.is_empty()) {
                Some(caption) => index.records.push(ImageRecord { path, caption: caption.to_string() }),
                None => index.skipped.push(Skipped {
                    path,
                    reason: SkipReason::MissingCaption(format!("{} line {} has no caption", file.display(), row.line)),
                }),
            }
        }
        Ok(index)
    }
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if kind.is_dir() {
            collect_images(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}
