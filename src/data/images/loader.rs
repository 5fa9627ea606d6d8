//! Serving an [`ImageIndex`] as batches from a background thread.
//!
//! The order is a pure function of the seed and the epoch, and a skipped
//! image is replaced by the next one in that order, so a run sees the same
//! batches every time. A bounded channel keeps at most `prefetch` batches
//! decoded ahead of the consumer.

use super::convert::rgb_to_hwc;
use super::decode::load_image;
use super::index::{ImageIndex, ImageRecord};
use crate::checkpoint::StopSignal;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug, PartialEq)]
pub struct LoaderOptions {
    /// Side of the square images served.
    pub resolution: u32,
    pub batch_size: usize,
    /// Seeds the per-epoch shuffle.
    pub seed: u64,
    pub shuffle: bool,
    /// Epochs to serve; `None` repeats forever.
    pub epochs: Option<u64>,
    /// Drop each epoch's last, smaller batch instead of serving it.
    pub drop_last: bool,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Threads decoding the images of a batch in parallel (1: the loader
    /// thread alone). The order served does not depend on it.
    pub workers: usize,
    /// Make an unreadable image or a missing caption an error instead of a skip.
    pub strict: bool,
    /// Batches to pass over before serving (a resumed run's position): they
    /// are skipped by index, without decoding, so the stream continues exactly
    /// where an uninterrupted one would be when every image is readable.
    pub start_batch: u64,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            resolution: 256,
            batch_size: 8,
            seed: 0,
            shuffle: true,
            epochs: None,
            drop_last: true,
            prefetch: 4,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8),
            strict: false,
            start_batch: 0,
        }
    }
}

/// Images `[B, resolution, resolution, 3]` f32 in [-1, 1] with their captions.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub pixels: HostTensor,
    pub captions: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    MissingCaption(String),
    Unreadable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            SkipReason::MissingCaption(why) => write!(f, "{}: no caption ({why})", self.path.display()),
            SkipReason::Unreadable(why) => write!(f, "{}: unreadable image ({why})", self.path.display()),
        }
    }
}

/// Every entry left out so far, each once, however many epochs passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkipReport {
    pub skipped: Vec<Skipped>,
}

impl SkipReport {
    pub fn missing_captions(&self) -> usize {
        self.skipped.iter().filter(|s| matches!(s.reason, SkipReason::MissingCaption(_))).count()
    }

    pub fn unreadable(&self) -> usize {
        self.skipped.iter().filter(|s| matches!(s.reason, SkipReason::Unreadable(_))).count()
    }
}

impl std::fmt::Display for SkipReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {} image(s) without a caption and {} unreadable image(s)", self.missing_captions(), self.unreadable())?;
        for s in &self.skipped {
            write!(f, "\n  {s}")?;
        }
        Ok(())
    }
}

/// Batches from a background thread; iterate it. The thread stops when the
/// loader is dropped, after the last epoch, or after the first error.
pub struct ImageLoader {
    receiver: Option<Receiver<Result<ImageBatch>>>,
    thread: Option<JoinHandle<()>>,
    report: Arc<Mutex<SkipReport>>,
    /// Images available after listing (before any decoding).
    pub len: usize,
    stop: Option<StopSignal>,
    /// A batch received by [`Self::wait_until_ready`], served first.
    pending: Option<ImageBatch>,
}

impl ImageLoader {
    /// Starts decoding. Fails at once for bad options, an empty dataset, or
    /// (strict) an image without a caption.
    pub fn start(index: ImageIndex, options: LoaderOptions) -> Result<ImageLoader> {
        if options.resolution == 0 || options.batch_size == 0 {
            return Err(Error::Invalid(format!(
                "image loader needs a positive resolution and batch size, got {} and {}",
                options.resolution, options.batch_size
            )));
        }
        if options.strict {
            if let Some(first) = index.skipped.first() {
                let more = index.skipped.len() - 1;
                let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
                return Err(Error::Invalid(format!("{first}{more}")));
            }
        }
        for s in &index.skipped {
            tracing::warn!("skipping {s}");
        }
        if index.records.is_empty() {
            return Err(Error::Invalid(format!(
                "the image dataset has no image with a caption ({} entries skipped)",
                index.skipped.len()
            )));
        }
        // Dropping the last partial batch of every epoch would serve nothing at all.
        if options.drop_last && index.records.len() < options.batch_size {
            return Err(Error::Invalid(format!(
                "the image dataset has {} usable image(s) ({} skipped), fewer than one batch of {}: add images or lower the batch size",
                index.records.len(),
                index.skipped.len(),
                options.batch_size
            )));
        }
        let len = index.records.len();
        let report = Arc::new(Mutex::new(SkipReport { skipped: index.skipped }));
        let (sender, receiver) = sync_channel(options.prefetch.max(1));
        let worker = Worker { records: index.records, options, report: report.clone(), bad: HashSet::new(), skip: 0 };
        let thread = std::thread::Builder::new()
            .name("image-loader".into())
            .spawn(move || worker.run(sender))
            .map_err(|e| Error::io("starting the image loader thread", e))?;
        Ok(ImageLoader { receiver: Some(receiver), thread: Some(thread), report, len, stop: None, pending: None })
    }

    /// Waits for the first batch, so a dataset that cannot serve one fails
    /// now (before the caller compiles anything); the batch is served next.
    pub fn wait_until_ready(&mut self) -> Result<()> {
        if self.pending.is_none() {
            match self.next() {
                Some(Ok(batch)) => self.pending = Some(batch),
                Some(Err(e)) => return Err(e),
                None => return Err(Error::Invalid("the image loader served no batch at all".into())),
            }
        }
        Ok(())
    }

    /// Makes waiting for the next batch end early (with [`Error::Stopped`])
    /// once `signal` is set, so a slow or stuck dataset cannot hold up a stop.
    pub fn stop_on(&mut self, signal: StopSignal) {
        self.stop = Some(signal);
    }

    /// Replaces this loader with `next` (the stream restarted elsewhere, as
    /// on restore), which keeps the stop signal this one was given.
    pub fn restart_with(&mut self, mut next: ImageLoader) {
        if let Some(stop) = &self.stop {
            next.stop = Some(stop.clone());
        }
        *self = next;
    }

    /// The entries skipped so far (listing plus decoding).
    pub fn skipped(&self) -> SkipReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Iterator for ImageLoader {
    type Item = Result<ImageBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(batch) = self.pending.take() {
            return Some(Ok(batch));
        }
        let receiver = self.receiver.as_ref()?;
        let Some(stop) = &self.stop else { return receiver.recv().ok() };
        stop.receive(receiver).unwrap_or_else(|reason| Some(Err(Error::Stopped(format!("waiting for the next batch of images ({reason})")))))
    }
}

impl Drop for ImageLoader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it exits.
        self.receiver.take();
        // After a stop request the worker may be stuck reading a stalled
        // store: it is left to end on its own rather than holding up the exit.
        let stopping = self.stop.as_ref().is_some_and(|s| s.is_set());
        if let Some(thread) = self.thread.take().filter(|_| !stopping) {
            let _ = thread.join();
        }
    }
}

/// The record order of epoch `epoch`: a shuffle seeded by (seed, epoch), or file order.
fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mix = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut StdRng::seed_from_u64(mix));
    }
    order
}

struct Worker {
    records: Vec<ImageRecord>,
    options: LoaderOptions,
    report: Arc<Mutex<SkipReport>>,
    /// Records found unreadable, not decoded again in later epochs.
    bad: HashSet<usize>,
    /// Records of the first epoch served to pass over (see `start_batch`).
    skip: usize,
}

impl Worker {
    fn run(mut self, sender: SyncSender<Result<ImageBatch>>) {
        // Whole epochs, then whole batches of the next one, by count alone.
        let len = self.records.len() as u64;
        let batch = self.options.batch_size as u64;
        let per_epoch = if self.options.drop_last { len / batch } else { len.div_ceil(batch) }.max(1);
        let mut epoch = self.options.start_batch / per_epoch;
        self.skip = ((self.options.start_batch % per_epoch) * batch) as usize;
        while self.options.epochs.is_none_or(|n| epoch < n) {
            match self.epoch(epoch, &sender) {
                Ok(true) => epoch += 1,
                Ok(false) => return,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
        }
    }

    /// Serves one epoch; `Ok(false)` when the consumer has gone.
    fn epoch(&mut self, epoch: u64, sender: &SyncSender<Result<ImageBatch>>) -> Result<bool> {
        let LoaderOptions { resolution, batch_size, seed, shuffle, drop_last, .. } = self.options;
        let mut pixels: Vec<f32> = Vec::new();
        let (mut captions, mut paths) = (Vec::new(), Vec::new());
        let mut served = 0;
        let mut batches = 0;
        let order: Vec<usize> =
            epoch_order(self.records.len(), seed, epoch, shuffle).into_iter().filter(|i| !self.bad.contains(i)).collect();
        let mut next = std::mem::take(&mut self.skip).min(order.len());
        while next < order.len() {
            // Decode just enough candidates to fill the batch; failures are
            // replaced by the next ones in the order on the following round.
            let chunk = &order[next..(next + batch_size - captions.len()).min(order.len())];
            next += chunk.len();
            let decoded = decode_all(&self.records, chunk, resolution, self.options.workers);
            for (&i, result) in chunk.iter().zip(decoded) {
                let record = &self.records[i];
                match result {
                    Ok(image) => {
                        pixels.extend(rgb_to_hwc(&image).to_vec::<f32>()?);
                        captions.push(record.caption.clone());
                        paths.push(record.path.clone());
                        served += 1;
                    }
                    Err(why) => {
                        let skipped = Skipped { path: record.path.clone(), reason: SkipReason::Unreadable(why) };
                        if self.options.strict {
                            return Err(Error::Invalid(skipped.to_string()));
                        }
                        tracing::warn!("skipping {skipped}");
                        self.bad.insert(i);
                        if let Ok(mut report) = self.report.lock() {
                            report.skipped.push(skipped);
                        }
                    }
                }
            }
            if captions.len() == batch_size {
                if !send(sender, &mut pixels, &mut captions, &mut paths, resolution, epoch)? {
                    return Ok(false);
                }
                batches += 1;
            }
        }
        if served == 0 {
            return Err(Error::Invalid(format!("none of the {} images of the dataset could be read", self.records.len())));
        }
        if batches == 0 && drop_last {
            // Every later epoch would be the same: fail instead of spinning.
            return Err(Error::Invalid(format!(
                "only {served} of the {} images of the dataset could be read, fewer than one batch of {batch_size}: add images or lower the batch size",
                self.records.len()
            )));
        }
        if !captions.is_empty() && !drop_last && !send(sender, &mut pixels, &mut captions, &mut paths, resolution, epoch)? {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Decodes `records[chunk[..]]`, results in chunk order, over up to
/// `workers` scoped threads each taking a contiguous share.
fn decode_all(records: &[ImageRecord], chunk: &[usize], resolution: u32, workers: usize) -> Vec<Result<RgbImage, String>> {
    let load = |i: &usize| load_image(&records[*i].path, resolution);
    let workers = workers.clamp(1, chunk.len().max(1));
    if workers == 1 {
        return chunk.iter().map(load).collect();
    }
    let share = chunk.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunk.chunks(share).map(|part| scope.spawn(move || part.iter().map(load).collect::<Vec<_>>())).collect();
        handles
            .into_iter()
            .zip(chunk.chunks(share))
            .flat_map(|(handle, part)| {
                // A decoder panic (a bug in a codec) costs only its images.
                handle.join().unwrap_or_else(|_| part.iter().map(|_| Err("the decoder panicked".to_string())).collect())
            })
            .collect()
    })
}

/// Sends the batch gathered so far, leaving the buffers empty; `Ok(false)`
/// when the consumer has gone.
fn send(
    sender: &SyncSender<Result<ImageBatch>>,
    pixels: &mut Vec<f32>,
    captions: &mut Vec<String>,
    paths: &mut Vec<PathBuf>,
    resolution: u32,
    epoch: u64,
) -> Result<bool> {
    let r = resolution as i64;
    let tensor = HostTensor::new(&[captions.len() as i64, r, r, 3], pixels)?;
    pixels.clear();
    let batch = ImageBatch { pixels: tensor, captions: std::mem::take(captions), paths: std::mem::take(paths), epoch };
    Ok(sender.send(Ok(batch)).is_ok())
}
