//! The endless stream of examples from dataset files: epochs, host shares,
//! the shuffle buffer, validation, tokenisation, and a position that can be
//! saved and restored.
//!
//! Restoring. A position is (epoch, rows consumed in this epoch, counts).
//! Rows enter the shuffle buffer whether or not they are valid and are
//! checked only when they leave it, so the order is a pure function of the
//! files' row counts (see `order.rs`). Restoring re-walks the epoch from
//! those counts alone, with no decoding or tokenising: parquet counts come
//! from the footers (two small range reads per file), JSONL counts from
//! reading the file. The RNG walk is O(consumed) integer operations. Then the
//! rows still in the buffer are loaded, which reads each file that still has
//! a row in the buffer once: in practice the last few files, at worst every
//! file of the epoch read so far. Counts are cached, so later epochs cost no
//! I/O to plan. The alternative, snapshotting the buffer into the position,
//! would put up to `shuffle_buffer` row references into every checkpoint's
//! metadata; the replay keeps the position three numbers.
//!
//! A file that cannot be read counts as having no rows, in the live stream
//! and in the replay alike; a parquet file whose footer reads but whose data
//! does not keeps its row count and its rows are dropped, so both agree.

use super::files::DataFile;
use super::order::{buffer_seed, mix, plan_epoch, replay, Cursor, EpochPlan, RowRef, ShuffleBuffer};
use super::record::{BadRow, DataCounts, ParsedRow, RowSpec};
use super::text::TextEncoder;
use super::Example;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where a loader is in its stream; saved into checkpoints (serde JSON) and
/// restored with `Dataset::train_loader(Some(&position))`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPosition {
    pub epoch: u64,
    /// Rows taken from the shuffle buffer in this epoch (valid or not; for synthetic data, examples).
    pub consumed: u64,
    pub counts: DataCounts,
    /// What stream this position belongs to (seed, hosts, shuffle buffer, files); checked on restore.
    pub stream: String,
}

/// Which rows of the training files a stream keeps, by a hash of the normalised caption.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Split {
    All,
    /// Rows whose hash is at or above the fraction (training).
    Above(f64),
    /// Rows whose hash is below the fraction (validation).
    Below(f64),
}

impl Split {
    fn keeps(&self, normalized_caption: &str) -> bool {
        // FNV-1a, then mixed: stable across platforms and releases (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in normalized_caption.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let u = (mix(h) >> 11) as f64 / (1u64 << 53) as f64;
        match *self {
            Split::All => true,
            Split::Above(f) => u >= f,
            Split::Below(f) => u < f,
        }
    }
}

/// Everything that fixes a stream.
#[derive(Clone)]
pub struct StreamParams {
    pub files: Arc<Vec<DataFile>>,
    pub text: Arc<TextEncoder>,
    pub rows: RowSpec,
    pub seed: u64,
    pub host_index: usize,
    pub host_count: usize,
    pub shuffle_buffer: usize,
    pub strict: bool,
    pub split: Split,
}

impl StreamParams {
    /// Identifies the stream, so a position is not restored into a different one.
    pub fn identity(&self) -> String {
        let mut h: u64 = 0;
        for f in self.files.iter() {
            for b in f.name.bytes() {
                h = mix(h ^ b as u64);
            }
            h = mix(h ^ 0xFF);
        }
        format!(
            "files seed={} host={}/{} shuffle_buffer={} split={:?} files={}:{h:016x}",
            self.seed,
            self.host_index,
            self.host_count,
            self.shuffle_buffer,
            self.split,
            self.files.len()
        )
    }
}

/// A row as it sits in the shuffle buffer.
enum Slot {
    Row(ParsedRow),
    /// Its file could not be decoded (already counted and reported once).
    FileFailed,
}

/// The file whose rows are being fed into the buffer.
struct OpenFile {
    file: usize,
    rows: Vec<Slot>,
}

pub struct ExampleStream {
    p: StreamParams,
    position: DataPosition,
    plan: EpochPlan,
    cursor: Cursor,
    buffer: ShuffleBuffer<(RowRef, Slot)>,
    open: Option<OpenFile>,
    row_counts: HashMap<usize, usize>,
    /// Whether this epoch has produced an example yet, to stop on a dataset with none.
    produced_in_epoch: bool,
}

impl ExampleStream {
    /// A stream at its start, or at a saved position.
    pub fn new(p: StreamParams, resume: Option<&DataPosition>) -> Result<ExampleStream> {
        if p.files.is_empty() {
            return Err(Error::Invalid("a file stream needs at least one file".into()));
        }
        let identity = p.identity();
        let position = match resume {
            None => DataPosition { stream: identity, ..DataPosition::default() },
            Some(saved) if saved.stream != identity => {
                return Err(Error::Invalid(format!(
                    "the saved data position belongs to another data stream: saved for [{}], this config gives [{identity}]; \
                     restore with the same data files, seed, shuffle_buffer and hosts, or start the data from the beginning",
                    saved.stream
                )))
            }
            Some(saved) => saved.clone(),
        };
        let plan = plan_epoch(p.files.len(), p.seed, position.epoch, p.host_index, p.host_count);
        let mut stream = ExampleStream {
            cursor: Cursor::start(&plan),
            buffer: ShuffleBuffer::new(p.shuffle_buffer, buffer_seed(p.seed, position.epoch, p.host_index)),
            plan,
            open: None,
            row_counts: HashMap::new(),
            produced_in_epoch: position.consumed > 0,
            position,
            p,
        };
        if stream.position.consumed > 0 {
            stream.restore()?;
        }
        Ok(stream)
    }

    pub fn position(&self) -> &DataPosition {
        &self.position
    }

    /// Re-walks the current epoch to `position.consumed` and loads the rows left in the buffer.
    fn restore(&mut self) -> Result<()> {
        let seed = buffer_seed(self.p.seed, self.position.epoch, self.p.host_index);
        let files = self.p.files.clone();
        let counts = &mut self.row_counts;
        let (refs, cursor) = replay(&self.plan, self.p.shuffle_buffer, seed, self.position.consumed, |file| {
            row_count(&files[file], file, counts)
        })?;
        // Read each file that still has rows in the buffer once.
        let mut wanted: HashMap<usize, Vec<usize>> = HashMap::new();
        for r in refs.items() {
            wanted.entry(r.file).or_default().push(r.row);
        }
        let mut loaded: HashMap<RowRef, Slot> = HashMap::new();
        for (file, rows) in wanted {
            // A file that cannot be read now has its buffered rows dropped, as the live stream does
            // for a file that fails to decode; it was counted when the stream first reached it.
            let Ok(all) = files[file].load() else { continue };
            let rows: HashSet<usize> = rows.into_iter().collect();
            for (row, parsed) in all.into_iter().enumerate().filter(|(row, _)| rows.contains(row)) {
                loaded.insert(RowRef { file, row }, Slot::Row(parsed));
            }
        }
        self.buffer = refs.try_map(|r| Ok((r, loaded.remove(&r).unwrap_or(Slot::FileFailed))))?;
        self.cursor = cursor;
        Ok(())
    }

    /// The next valid example; bad rows are counted and skipped (or fatal when strict).
    pub fn next_example(&mut self) -> Result<Example> {
        loop {
            let Some((at, slot)) = self.next_slot()? else {
                if !self.produced_in_epoch {
                    return Err(Error::Invalid(format!(
                        "epoch {} produced no usable examples from {} file(s) (so far: {})",
                        self.position.epoch,
                        self.p.files.len(),
                        self.position.counts
                    )));
                }
                self.start_epoch(self.position.epoch + 1);
                continue;
            };
            self.position.consumed += 1;
            let raw = match slot {
                Slot::FileFailed => continue,
                Slot::Row(Err(bad)) => {
                    self.reject(at, bad)?;
                    continue;
                }
                Slot::Row(Ok(raw)) => raw,
            };
            let record = match self.p.rows.validate(raw) {
                Ok(r) => r,
                Err(bad) => {
                    self.reject(at, bad)?;
                    continue;
                }
            };
            let caption = super::normalize::normalize_caption(&record.caption);
            if !self.p.split.keeps(&caption) {
                self.position.counts.held_out += 1;
                continue;
            }
            let text = self.p.text.encode_normalized(&caption)?;
            let labels = record.encoding.iter().map(|&t| t as i32).collect();
            self.produced_in_epoch = true;
            self.position.counts.examples += 1;
            return Ok(Example { input_ids: text.input_ids, attention_mask: text.attention_mask, labels });
        }
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.position.epoch = epoch;
        self.position.consumed = 0;
        self.plan = plan_epoch(self.p.files.len(), self.p.seed, epoch, self.p.host_index, self.p.host_count);
        self.cursor = Cursor::start(&self.plan);
        self.buffer = ShuffleBuffer::new(self.p.shuffle_buffer, buffer_seed(self.p.seed, epoch, self.p.host_index));
        self.open = None;
        self.produced_in_epoch = false;
    }

    fn reject(&mut self, at: RowRef, bad: BadRow) -> Result<()> {
        let message = format!("{} row {}: {}: {}", self.p.files[at.file].name, at.row, bad.kind, bad.detail);
        if self.p.strict {
            return Err(Error::Invalid(format!("{message} (data.strict is set)")));
        }
        tracing::warn!("skipping {message}");
        self.position.counts.add_bad(bad.kind);
        Ok(())
    }

    /// The next row out of the shuffle buffer, feeding it from the files.
    fn next_slot(&mut self) -> Result<Option<(RowRef, Slot)>> {
        let (p, plan, cursor, open, counts, position) =
            (&self.p, &self.plan, &mut self.cursor, &mut self.open, &mut self.row_counts, &mut self.position);
        self.buffer.next(|| {
            let found = cursor.next_ref(plan, |file| {
                if open.as_ref().is_none_or(|o| o.file != file) {
                    *open = Some(open_file(p, file, counts, &mut position.counts)?);
                }
                Ok(open.as_ref().map_or(0, |o| o.rows.len()))
            })?;
            Ok(found.map(|r| {
                let slot = open
                    .as_mut()
                    .and_then(|o| o.rows.get_mut(r.row))
                    .map_or(Slot::FileFailed, |s| std::mem::replace(s, Slot::FileFailed));
                (r, slot)
            }))
        })
    }
}

/// A file's row count, cached; an unreadable file has none.
fn row_count(file: &DataFile, index: usize, cache: &mut HashMap<usize, usize>) -> Result<usize> {
    if let Some(&n) = cache.get(&index) {
        return Ok(n);
    }
    let n = file.count_rows().unwrap_or(0);
    cache.insert(index, n);
    Ok(n)
}

/// Loads a file the stream has reached; a failure is counted and reported here, once per epoch.
fn open_file(p: &StreamParams, index: usize, cache: &mut HashMap<usize, usize>, counts: &mut DataCounts) -> Result<OpenFile> {
    let file = &p.files[index];
    match file.load() {
        Ok(rows) => {
            cache.insert(index, rows.len());
            Ok(OpenFile { file: index, rows: rows.into_iter().map(Slot::Row).collect() })
        }
        Err(e) => {
            if p.strict {
                return Err(Error::Invalid(format!("{e} (data.strict is set)")));
            }
            tracing::warn!("skipping unreadable file: {e}");
            counts.unreadable_files += 1;
            // Keep the row count the replay would see, so positions stay exact.
            let n = row_count(file, index, cache)?;
            Ok(OpenFile { file: index, rows: (0..n).map(|_| Slot::FileFailed).collect() })
        }
    }
}
