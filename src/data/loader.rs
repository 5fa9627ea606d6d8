//! What the trainer calls: open a dataset once from the `data:` config, then
//! take batches from a training loader (resumable) and evaluation loaders.

use super::config::{DataConfig, DataKind, TOKENIZER_HINT};
use super::files::{resolve, DataFile};
use super::record::{DataCounts, RowSpec};
use super::stream::{DataPosition, ExampleStream, Split, StreamParams};
use super::text::TextEncoder;
use super::{Batch, Synthetic};
use crate::checkpoint::StopSignal;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Shapes and seed the model and training loop impose on the data.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderSpec {
    /// Examples per batch on this host.
    pub batch_size: usize,
    pub seed: u64,
    /// Caption tokens per example (`max_text_length`, 64 for dalle-mini).
    pub text_length: usize,
    /// Image tokens per example (256 for dalle-mini).
    pub image_length: usize,
    /// Image tokens must be in `[0, image_vocab)`.
    pub image_vocab: i64,
    /// The model's text vocabulary; the tokenizer must fit in it.
    pub text_vocab: i64,
}

/// Seed offset of the synthetic validation captions (distinct from the training ones).
const SYNTHETIC_EVAL_SEED: u64 = 0x5EED_E7A1;

/// An opened dataset: files resolved and tokenizer loaded, once.
pub struct Dataset {
    config: DataConfig,
    spec: LoaderSpec,
    files: Option<FileData>,
}

struct FileData {
    train: Arc<Vec<DataFile>>,
    eval: Option<Arc<Vec<DataFile>>>,
    text: Arc<TextEncoder>,
}

impl Dataset {
    /// Validates the config, resolves `train_files` / `eval_files` and loads the tokenizer.
    pub fn open(config: &DataConfig, spec: LoaderSpec) -> Result<Dataset> {
        config.validate().map_err(Error::Invalid)?;
        if spec.batch_size == 0 {
            return Err(Error::Invalid("data loader batch size must be at least 1".into()));
        }
        if spec.image_length == 0 || spec.image_vocab <= 0 || spec.text_vocab <= 1 {
            return Err(Error::Invalid(format!(
                "data loader needs image_length >= 1, image_vocab >= 1 and text_vocab >= 2, got {}, {} and {}",
                spec.image_length, spec.image_vocab, spec.text_vocab
            )));
        }
        let files = match config.kind {
            DataKind::Synthetic => None,
            DataKind::Files => {
                let train = resolve(&config.train_files, config.format, "data.train_files")?;
                let eval = match config.eval_files.is_empty() {
                    true => None,
                    false => Some(Arc::new(resolve(&config.eval_files, config.format, "data.eval_files")?)),
                };
                let tokenizer = config.tokenizer.as_deref().unwrap_or_default();
                let mut text = TextEncoder::load(tokenizer, spec.text_length).map_err(|e| Error::Invalid(format!("data.tokenizer: {e} ({TOKENIZER_HINT})")))?;
                if let Some(words) = &config.word_frequency {
                    let normalizer = crate::data::TextNormalizer::with_word_frequency(std::path::Path::new(words))
                        .map_err(|e| Error::Invalid(format!("data.word_frequency: {e}")))?;
                    text = text.with_normalizer(Arc::new(normalizer));
                }
                if text.vocab_size() as i64 > spec.text_vocab {
                    return Err(Error::Invalid(format!(
                        "data.tokenizer '{tokenizer}' has {} tokens but the model's text vocabulary has {}; use a matching tokenizer or model",
                        text.vocab_size(),
                        spec.text_vocab
                    )));
                }
                Some(FileData { train: Arc::new(train), eval, text: Arc::new(text) })
            }
        };
        Ok(Dataset { config: config.clone(), spec, files })
    }

    /// Number of training files (0 for synthetic data).
    pub fn train_file_count(&self) -> usize {
        self.files.as_ref().map_or(0, |f| f.train.len())
    }

    /// The training stream: shuffled, endless over epochs, from the start or a saved position.
    pub fn train_loader(&self, resume: Option<&DataPosition>) -> Result<Loader> {
        match &self.files {
            None => self.synthetic(self.spec.seed, resume),
            Some(f) => {
                let split = if self.config.eval_fraction > 0.0 { Split::Above(self.config.eval_fraction) } else { Split::All };
                let params = self.params(f.train.clone(), f.text.clone(), split, self.config.shuffle_buffer, self.spec.seed);
                self.threaded(params, resume)
            }
        }
    }

    /// A fresh validation stream (the same batches each call, in file order);
    /// `None` when the config names no validation split.
    pub fn eval_loader(&self) -> Result<Option<Loader>> {
        match &self.files {
            None => self.synthetic(self.spec.seed ^ SYNTHETIC_EVAL_SEED, None).map(Some),
            Some(f) => {
                let (files, split) = match (&f.eval, self.config.eval_fraction) {
                    (Some(eval), _) => (eval.clone(), Split::All),
                    (None, x) if x > 0.0 => (f.train.clone(), Split::Below(x)),
                    (None, _) => return Ok(None),
                };
                self.threaded(self.params(files, f.text.clone(), split, 1, self.spec.seed), None).map(Some)
            }
        }
    }

    fn params(&self, files: Arc<Vec<DataFile>>, text: Arc<TextEncoder>, split: Split, shuffle_buffer: usize, seed: u64) -> StreamParams {
        StreamParams {
            files,
            text,
            rows: RowSpec { image_length: self.spec.image_length, image_vocab: self.spec.image_vocab },
            seed,
            host_index: self.config.host_index,
            host_count: self.config.host_count,
            shuffle_buffer,
            strict: self.config.strict,
            split,
        }
    }

    fn synthetic(&self, seed: u64, resume: Option<&DataPosition>) -> Result<Loader> {
        let data = Synthetic {
            seed,
            text_vocab: self.spec.text_vocab,
            image_vocab: self.spec.image_vocab,
            text_length: self.spec.text_length,
            image_length: self.spec.image_length,
            num_captions: self.config.num_captions,
        };
        let identity = format!(
            "synthetic seed={seed} host={}/{} num_captions={}",
            self.config.host_index, self.config.host_count, self.config.num_captions
        );
        let position = match resume {
            None => DataPosition { stream: identity, ..DataPosition::default() },
            Some(p) if p.stream == identity => p.clone(),
            Some(p) => {
                return Err(Error::Invalid(format!(
                    "the saved data position belongs to another data stream: saved for [{}], this config gives [{identity}]",
                    p.stream
                )))
            }
        };
        let source = Source::Synthetic { data, host_index: self.config.host_index as u64, host_count: self.config.host_count as u64 };
        Ok(Loader { batch_size: self.spec.batch_size, position, source, stop: None })
    }

    fn threaded(&self, params: StreamParams, resume: Option<&DataPosition>) -> Result<Loader> {
        // Opening restores the position here, so a bad position is an error of this call.
        let stream = ExampleStream::new(params, resume)?;
        let position = stream.position().clone();
        let (tx, rx) = sync_channel(self.config.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let batch_size = self.spec.batch_size;
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || produce(stream, batch_size, tx, thread_stop))
            .map_err(|e| Error::io("cannot start the data loader thread", e))?;
        Ok(Loader { batch_size, position, source: Source::Thread { rx: Some(rx), handle: Some(handle), stop, failed: None }, stop: None })
    }
}

type Produced = Result<(Batch, DataPosition)>;

/// The background thread: fills the bounded channel until the loader is dropped or an error occurs.
fn produce(mut stream: ExampleStream, batch_size: usize, tx: SyncSender<Produced>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let item = (0..batch_size)
            .map(|_| stream.next_example())
            .collect::<Result<Vec<_>>>()
            .and_then(|examples| Batch::from_examples(&examples))
            .map(|batch| (batch, stream.position().clone()));
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

/// Batches of one stream, with the position after the last batch handed out.
pub struct Loader {
    batch_size: usize,
    position: DataPosition,
    source: Source,
    /// Ends waits for the next batch early (see [`Loader::stop_on`]).
    stop: Option<StopSignal>,
}

enum Source {
    Synthetic { data: Synthetic, host_index: u64, host_count: u64 },
    Thread { rx: Option<Receiver<Produced>>, handle: Option<JoinHandle<()>>, stop: Arc<AtomicBool>, failed: Option<String> },
}

impl Loader {
    /// The next batch (`input_ids`, `attention_mask` `[B, text_length]`, `labels` `[B, image_length]`, all i32).
    pub fn next_batch(&mut self) -> Result<Batch> {
        match &mut self.source {
            Source::Synthetic { data, host_index, host_count } => {
                let start = self.position.consumed;
                let examples: Vec<_> =
                    (start..start + self.batch_size as u64).map(|k| data.example(k * *host_count + *host_index)).collect();
                self.position.consumed += self.batch_size as u64;
                self.position.counts.examples += self.batch_size as u64;
                Batch::from_examples(&examples)
            }
            Source::Thread { rx, handle, failed, .. } => {
                if let Some(message) = failed {
                    return Err(Error::Invalid(format!("the data loader stopped earlier: {message}")));
                }
                let received = match (rx.as_ref(), &self.stop) {
                    (Some(rx), Some(stop)) => stop
                        .receive(rx)
                        .map_err(|reason| Error::Stopped(format!("waiting for the next batch of examples ({reason})")))?,
                    (Some(rx), None) => rx.recv().ok(),
                    (None, _) => None,
                };
                match received {
                    Some(Ok((batch, position))) => {
                        self.position = position;
                        Ok(batch)
                    }
                    Some(Err(e)) => {
                        *failed = Some(e.to_string());
                        Err(e)
                    }
                    _ => {
                        let panicked = handle.take().map(|h| h.join().is_err()).unwrap_or(false);
                        let message = if panicked { "the data loader thread panicked" } else { "the data loader thread stopped" };
                        *failed = Some(message.to_string());
                        Err(Error::Invalid(message.into()))
                    }
                }
            }
        }
    }

    /// Makes waiting for the next batch end early (with [`Error::Stopped`],
    /// the position unchanged) once `signal` is set, so a stalled store
    /// cannot hold up a stop past the preemption notice.
    pub fn stop_on(&mut self, signal: StopSignal) {
        self.stop = Some(signal);
    }

    /// Replaces this loader with `next` (the stream restarted elsewhere, as
    /// on restore), which keeps the stop signal this one was given.
    pub fn restart_with(&mut self, mut next: Loader) {
        if let Some(stop) = &self.stop {
            next.stop = Some(stop.clone());
        }
        *self = next;
    }

    /// Where the stream is after the last batch returned; save it to resume exactly there.
    pub fn position(&self) -> &DataPosition {
        &self.position
    }

    /// Examples delivered and rows skipped so far (including before a restore).
    pub fn counts(&self) -> &DataCounts {
        &self.position.counts
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle, stop, .. } = &mut self.source {
            stop.store(true, Ordering::Relaxed);
            // Dropping the receiver wakes a producer blocked on a full channel.
            drop(rx.take());
            // After a stop request the producer may be stuck in a read of a
            // stalled store: it is left to end on its own rather than holding
            // up the exit.
            let stopping = self.stop.as_ref().is_some_and(|s| s.is_set());
            if let Some(h) = handle.take().filter(|_| !stopping) {
                let _ = h.join();
            }
        }
    }
}
