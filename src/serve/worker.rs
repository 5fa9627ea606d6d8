//! The model worker: one thread owns the models (PJRT calls block, so they
//! never run on the async runtime), takes batches of compatible jobs from the
//! queue, runs one sampler call per batch, publishes progress and previews
//! to each job's status, and stops the call when every client has left.

use super::error::ApiError;
use super::metrics::{bump, Metrics};
use super::queue::{Job, Queue, Status};
use super::response::{GenerateResponse, Timings};
use super::ServeOptions;
use crate::error::Error;
use crate::generate::output::png_bytes;
use crate::generate::{Flow, ImageScorer, Progress, Request, RunOptions, SamplingSettings, TextToImage};
use axum::http::StatusCode;
use base64::Engine as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What an observer sees after each chunk of positions of a sampler call.
#[derive(Clone, Debug)]
pub struct ChunkReport {
    /// Requests in the call, and how many of them still have a client.
    pub requests: usize,
    pub connected: usize,
    pub tokens_done: u64,
    pub tokens_total: u64,
}

/// Called on the worker thread after each chunk, before the cancellation
/// check (for monitoring; tests use it to hold the worker at a known point).
pub type ChunkObserver = Arc<dyn Fn(&ChunkReport) + Send + Sync>;

pub type Scorer = Option<Box<dyn ImageScorer + Send>>;

pub fn run(t2i: TextToImage, scorer: Scorer, queue: Arc<Queue>, metrics: Arc<Metrics>, options: ServeOptions) {
    if options.warm_up {
        warm_up(&t2i, &options);
    }
    while let Some(taken) = queue.take(options.batch_images) {
        for _ in &taken.abandoned {
            bump(&metrics.cancelled);
        }
        if taken.batch.is_empty() {
            continue;
        }
        metrics.running.store(taken.batch.len() as u64, Ordering::Relaxed);
        // A panic in one batch must not leave later clients waiting forever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve_batch(&t2i, scorer.as_deref(), &taken.batch, &metrics, &options)));
        if outcome.is_err() {
            tracing::error!("the model worker panicked while serving {} request(s); they are answered 500", taken.batch.len());
            for job in &taken.batch {
                if !job.status.borrow().is_final() {
                    bump(&metrics.failed);
                    job.status.send_replace(Status::Failed(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model failed on this request".into())));
                }
            }
        }
        metrics.running.store(0, Ordering::Relaxed);
    }
}

/// Compiles the sampler programs of a lone default request and of a full
/// batch, so the first clients do not wait for them: each call runs the
/// encoder and one position, then stops.
fn warm_up(t2i: &TextToImage, options: &ServeOptions) {
    let t = Instant::now();
    let run = RunOptions { rows_per_device: options.rows_per_device, chunk: 1, partial_tokens: false };
    let encoded = t2i.encode_prompt("warm up").and_then(|(text, _)| Ok((text, t2i.text.encode("")?)));
    let (text, uncond) = match encoded {
        Ok(e) => e,
        Err(e) => return tracing::warn!("warming up the sampler failed: {e}"),
    };
    for n in [options.default_images, options.batch_images] {
        let request = Request { text: text.clone(), n, key_index: 0 };
        match t2i.sampler.generate(&[request], &uncond, 0, &SamplingSettings::default(), &run, |_| Flow::Cancel) {
            Ok(_) | Err(Error::Cancelled) => {}
            Err(e) => return tracing::warn!("warming up the sampler failed: {e}"),
        }
    }
    tracing::info!("sampler compiled and warm ({:.1} s)", t.elapsed().as_secs_f64());
}

fn base64_png(image: &image::RgbImage) -> crate::error::Result<String> {
    Ok(base64::engine::general_purpose::STANDARD.encode(png_bytes(image)?))
}

fn fail(job: &Job, metrics: &Metrics, status: StatusCode, message: String) {
    bump(&metrics.failed);
    job.status.send_replace(Status::Failed(ApiError::new(status, message)));
}

fn serve_batch(t2i: &TextToImage, scorer: Option<&(dyn ImageScorer + Send)>, jobs: &[Arc<Job>], metrics: &Metrics, options: &ServeOptions) {
    let started = Instant::now();
    let mut live: Vec<&Arc<Job>> = Vec::with_capacity(jobs.len());
    let mut requests = Vec::with_capacity(jobs.len());
    let mut cuts = Vec::with_capacity(jobs.len());
    for job in jobs {
        match t2i.encode_prompt(&job.spec.prompt) {
            // The request's seed is the key index: its images do not depend on what it is batched with.
            Ok((text, cut)) => {
                requests.push(Request { text, n: job.spec.n, key_index: job.spec.seed });
                cuts.push(cut);
                live.push(job);
            }
            Err(e) => fail(job, metrics, StatusCode::BAD_REQUEST, format!("field 'prompt': {e}")),
        }
    }
    if live.is_empty() {
        return;
    }
    let uncond = match t2i.text.encode("") {
        Ok(u) => u,
        Err(e) => {
            live.iter().for_each(|j| fail(j, metrics, StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the empty caption: {e}")));
            return;
        }
    };
    let settings: SamplingSettings = live[0].spec.settings.clone();
    let length = t2i.sampler.config().image_length as usize;
    let previews = live.iter().any(|j| j.previews);
    let run = RunOptions { rows_per_device: options.rows_per_device, chunk: options.preview_every, partial_tokens: previews };
    // Rows are request-major: request i owns rows first_row[i]..first_row[i] + n.
    let first_row: Vec<usize> = live.iter().scan(0, |acc, j| {
        let first = *acc;
        *acc += j.spec.n;
        Some(first)
    }).collect();
    let images_total: usize = live.iter().map(|j| j.spec.n).sum();
    for job in &live {
        job.status.send_replace(Status::Running { tokens_done: 0, tokens_total: (job.spec.n * length) as u64, preview: None });
    }
    bump(&metrics.sampler_calls);
    let generated = t2i.sampler.generate(&requests, &uncond, 0, &settings, &run, |p: &Progress| {
        let connected = live.iter().filter(|j| !j.abandoned()).count();
        if let Some(observe) = &options.chunk_observer {
            observe(&ChunkReport { requests: live.len(), connected, tokens_done: p.tokens_done, tokens_total: p.tokens_total });
        }
        // Other clients' requests share the call: it stops only when all have left.
        if live.iter().all(|j| j.abandoned()) {
            return Flow::Cancel;
        }
        for (job, &first) in live.iter().zip(&first_row) {
            if job.abandoned() {
                continue;
            }
            let rows = first..first + job.spec.n;
            let done: u64 = rows
                .clone()
                .map(|r| {
                    let positions = if r < p.batch_rows.start {
                        length
                    } else if r < p.batch_rows.end {
                        p.positions_done
                    } else {
                        0
                    };
                    positions as u64
                })
                .sum();
            let preview = match (job.previews, p.partial) {
                (true, Some(partial)) => preview(t2i, partial, &p.batch_rows, &rows),
                _ => None,
            };
            job.status.send_replace(Status::Running { tokens_done: done, tokens_total: (job.spec.n * length) as u64, preview });
        }
        Flow::Continue
    });
    let generated = match generated {
        Ok(g) => g,
        Err(Error::Cancelled) => {
            bump(&metrics.sampler_calls_cancelled);
            live.iter().for_each(|_| bump(&metrics.cancelled));
            tracing::info!("stopped a sampler call of {} request(s): every client disconnected", live.len());
            return;
        }
        Err(e) => {
            tracing::error!("sampler call failed: {e}");
            live.iter().for_each(|j| fail(j, metrics, StatusCode::INTERNAL_SERVER_ERROR, format!("generation failed: {e}")));
            return;
        }
    };
    for ((job, tokens), cut) in live.iter().zip(&generated.tokens).zip(cuts) {
        if job.abandoned() {
            bump(&metrics.cancelled);
            continue;
        }
        let t = Instant::now();
        let ranked = t2i.decode(tokens).and_then(|images| rank(scorer, &job.spec.prompt, images));
        let encoded = ranked.and_then(|(images, order, scores)| {
            let pngs = images.iter().map(base64_png).collect::<crate::error::Result<Vec<_>>>()?;
            Ok((pngs, order, scores))
        });
        let (images, candidates, scores) = match encoded {
            Ok(i) => i,
            Err(e) => {
                fail(job, metrics, StatusCode::INTERNAL_SERVER_ERROR, format!("decoding or scoring the images failed: {e}"));
                continue;
            }
        };
        let n = images.len();
        let response = GenerateResponse {
            images,
            scores,
            seed: job.spec.seed,
            candidates,
            prompt: job.spec.prompt.clone(),
            prompt_tokens_cut: cut,
            settings: settings.clone(),
            timings: Timings {
                queued_secs: started.duration_since(job.enqueued).as_secs_f64(),
                compile_secs: generated.compile_secs,
                sample_secs: generated.sample_secs,
                decode_secs: t.elapsed().as_secs_f64(),
                total_secs: job.enqueued.elapsed().as_secs_f64(),
                batch_requests: live.len(),
                batch_images: images_total,
            },
        };
        metrics.completed(job.enqueued.elapsed(), n);
        job.status.send_replace(Status::Done(Arc::new(response)));
    }
}

/// The images best first by `scorer`'s score, their candidate indices and
/// scores; without a scorer, generation order and no scores.
type Ranked = (Vec<image::RgbImage>, Vec<usize>, Option<Vec<f32>>);

fn rank(scorer: Option<&(dyn ImageScorer + Send)>, prompt: &str, images: Vec<image::RgbImage>) -> crate::error::Result<Ranked> {
    let Some(scorer) = scorer else {
        let order = (0..images.len()).collect();
        return Ok((images, order, None));
    };
    let scores = scorer.score(prompt, &images)?;
    if scores.len() != images.len() || scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::Invalid(format!("the scorer returned {} scores for {} images: {scores:?}", scores.len(), images.len())));
    }
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let ranked = order.iter().map(|&i| images[i].clone()).collect();
    let ranked_scores = order.iter().map(|&i| scores[i]).collect();
    Ok((ranked, order, Some(ranked_scores)))
}

/// The partial images of `rows` that are in the current batch, as base64 PNGs.
fn preview(t2i: &TextToImage, partial: &[Vec<i32>], batch: &std::ops::Range<usize>, rows: &std::ops::Range<usize>) -> Option<Arc<Vec<String>>> {
    let (from, to) = (rows.start.max(batch.start), rows.end.min(batch.end));
    if from >= to {
        return None;
    }
    let mine = &partial[from - batch.start..to - batch.start];
    match t2i.decode(mine).and_then(|images| images.iter().map(base64_png).collect()) {
        Ok(pngs) => Some(Arc::new(pngs)),
        Err(e) => {
            tracing::warn!("decoding a preview failed: {e}");
            None
        }
    }
}
