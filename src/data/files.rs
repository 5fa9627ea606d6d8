//! Dataset files: resolving the paths, directories, patterns and URLs of a
//! config into a sorted list of shards, reading them, and writing datasets.

use super::config::DataFormat;
use super::record::{ParsedRow, Record};
use super::storage_io::{self, block_on, object_location, split_parent};
use super::{jsonl_format, parquet_format};
use crate::error::{Error, Result};
use crate::storage::{self, Location};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

/// One shard of a dataset.
#[derive(Clone, Debug)]
pub struct DataFile {
    pub location: Location,
    pub path: ObjectPath,
    pub format: DataFormat,
    /// How the user can find it: the URL or local path.
    pub name: String,
}

impl DataFile {
    /// Number of rows; for parquet from the footer only, for JSONL by reading the file.
    pub fn count_rows(&self) -> Result<usize> {
        match self.format {
            DataFormat::Parquet => parquet_format::count_rows(&*self.location.store, &self.path, &self.name),
            _ => Ok(jsonl_format::count_rows(&self.read()?)),
        }
    }

    /// Every row of the file, decoded but not validated.
    pub fn load(&self) -> Result<Vec<ParsedRow>> {
        let bytes = self.read()?;
        match self.format {
            DataFormat::Parquet => parquet_format::decode(bytes, &self.name),
            _ => Ok(jsonl_format::decode(&bytes)),
        }
    }

    fn read(&self) -> Result<bytes::Bytes> {
        storage_io::get(&*self.location.store, &self.path, &self.name)
    }
}

fn format_of(name: &str) -> Option<DataFormat> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") {
        Some(DataFormat::Parquet)
    } else if [".jsonl", ".json", ".ndjson"].iter().any(|e| lower.ends_with(e)) {
        Some(DataFormat::Jsonl)
    } else {
        None
    }
}

/// Whether a listed file belongs to the dataset under `format`.
fn wanted(name: &str, format: DataFormat) -> bool {
    match (format_of(name), format) {
        (Some(_), DataFormat::Auto) => true,
        (Some(found), wanted) => found == wanted,
        (None, _) => false,
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Matches `*` (any run of characters) and `?` (one character).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Resolves config entries to shards: each entry is a file, a directory (all
/// data files below it), or a pattern with `*`/`?` in its last component;
/// local paths or storage URLs. Entries keep their order, the files of one
/// entry are sorted by name, and a file named twice is kept once. An entry
/// that matches nothing is an error naming `key` (e.g. `data.train_files`).
pub fn resolve(specs: &[String], format: DataFormat, key: &str) -> Result<Vec<DataFile>> {
    let mut files: Vec<DataFile> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let entry = format!("{key}[{i}] '{spec}'");
        let found = resolve_one(spec, format).map_err(|e| Error::Invalid(format!("{entry}: {e}")))?;
        if found.is_empty() {
            return Err(Error::Invalid(format!("{entry} matches no .parquet or .jsonl files")));
        }
        for f in found {
            if !files.iter().any(|g| g.name == f.name) {
                files.push(f);
            }
        }
    }
    Ok(files)
}

fn resolve_one(spec: &str, format: DataFormat) -> Result<Vec<DataFile>> {
    let is_url = spec.contains("://");
    let (parent, last) = split_parent(spec);
    if has_wildcard(&parent) {
        return Err(Error::Invalid("wildcards are only supported in the last path component".into()));
    }
    let single = |format_hint: Option<DataFormat>| -> Result<Vec<DataFile>> {
        let format = match (format, format_hint) {
            (DataFormat::Auto, Some(f)) => f,
            (DataFormat::Auto, None) => {
                return Err(Error::Invalid("cannot tell the format from the extension; set data.format to parquet or jsonl".into()))
            }
            (f, _) => f,
        };
        let (location, path) = object_location(spec)?;
        Ok(vec![DataFile { location, path, format, name: spec.to_string() }])
    };
    if has_wildcard(&last) {
        return list(&parent, format, Some(&last));
    }
    if is_url {
        // Object stores have no directories: a name with a data extension is a file, anything else a prefix.
        return match format_of(&last) {
            Some(f) => single(Some(f)),
            None => list(spec, format, None),
        };
    }
    let path = std::path::Path::new(spec);
    if path.is_dir() {
        list(spec, format, None)
    } else if path.is_file() {
        single(format_of(&last))
    } else {
        Err(Error::Invalid("no such file or directory".into()))
    }
}

/// Data files under `dir` (recursively), or its direct children matching `pattern`.
fn list(dir: &str, format: DataFormat, pattern: Option<&str>) -> Result<Vec<DataFile>> {
    if !dir.contains("://") && !std::path::Path::new(dir).is_dir() {
        return Err(Error::Invalid(format!("directory '{dir}' does not exist")));
    }
    let location = storage::open(dir).map_err(|e| Error::Invalid(e.to_string()))?;
    let prefix = (location.prefix.parts_count() > 0).then_some(&location.prefix);
    let metas: Vec<_> = block_on(location.store.list(prefix).try_collect::<Vec<_>>())?
        .map_err(|e| Error::Invalid(format!("cannot list '{dir}': {e}")))?;
    let mut files = Vec::new();
    for meta in metas {
        let relative: Vec<String> = match meta.location.prefix_match(&location.prefix) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
            None => continue,
        };
        let relative = relative.join("/");
        let keep = match pattern {
            Some(p) => !relative.contains('/') && wildcard_match(p, &relative) && (format != DataFormat::Auto || format_of(&relative).is_some()),
            None => wanted(&relative, format),
        };
        if !keep {
            continue;
        }
        let file_format = match format {
            DataFormat::Auto => format_of(&relative).unwrap_or(DataFormat::Auto),
            f => f,
        };
        let name = format!("{}/{}", dir.trim_end_matches('/'), relative);
        files.push(DataFile { location: location.clone(), path: meta.location, format: file_format, name });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Writes `records` as one dataset file (parquet or JSONL, by `format` or
/// else by extension) at a local path or storage URL.
pub fn write_dataset(path_or_url: &str, format: DataFormat, records: &[Record]) -> Result<()> {
    let format = match format {
        DataFormat::Auto => format_of(path_or_url).ok_or_else(|| {
            Error::Invalid(format!("cannot tell the format of '{path_or_url}' from its extension (.parquet, .jsonl); name one"))
        })?,
        f => f,
    };
    storage_io::write_object(path_or_url, dataset_bytes(format, records)?)
}

/// The bytes of a dataset file of `records` (parquet, or JSONL for any other format).
pub fn dataset_bytes(format: DataFormat, records: &[Record]) -> Result<Vec<u8>> {
    match format {
        DataFormat::Parquet => parquet_format::encode(records),
        _ => jsonl_format::encode(records),
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.parquet", "a.parquet"));
        assert!(wildcard_match("train-??.jsonl", "train-07.jsonl"));
        assert!(!wildcard_match("train-??.jsonl", "train-7.jsonl"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("*", ""));
    }
}
