//! Counters behind `GET /metrics`: requests by outcome, images, sampler
//! calls, and request latency percentiles over a recent window.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Completed requests kept for the latency percentiles and images/s.
const WINDOW: usize = 1000;
/// Recent throughput is measured over this span.
const RATE_SPAN: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rejected_invalid: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub images: AtomicU64,
    pub sampler_calls: AtomicU64,
    pub sampler_calls_cancelled: AtomicU64,
    pub running: AtomicU64,
    recent: Mutex<VecDeque<Completion>>,
}

struct Completion {
    at: Instant,
    latency: Duration,
    images: usize,
}

/// A snapshot, as `GET /metrics?format=json` returns it.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub queue_length: usize,
    pub queue_capacity: usize,
    pub running_requests: u64,
    pub requests_total: u64,
    pub requests_completed: u64,
    pub requests_rejected_queue_full: u64,
    pub requests_rejected_invalid: u64,
    pub requests_cancelled: u64,
    pub requests_failed: u64,
    pub images_total: u64,
    pub sampler_calls: u64,
    pub sampler_calls_cancelled: u64,
    /// Images completed per second over the last minute.
    pub images_per_second: f64,
    /// Request latency (arrival to answer) over the last completed requests.
    pub latency_p50_secs: Option<f64>,
    pub latency_p95_secs: Option<f64>,
    pub uptime_secs: f64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn completed(&self, latency: Duration, images: usize) {
        bump(&self.completed);
        self.images.fetch_add(images as u64, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(Completion { at: Instant::now(), latency, images });
    }

    /// The median latency, for `Retry-After` (1 s when nothing completed yet).
    pub fn typical_latency_secs(&self) -> u64 {
        self.percentiles().0.map_or(1, |s| s.ceil().max(1.0) as u64)
    }

    fn percentiles(&self) -> (Option<f64>, Option<f64>, f64) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut secs: Vec<f64> = recent.iter().map(|c| c.latency.as_secs_f64()).collect();
        secs.sort_by(f64::total_cmp);
        let at = |q: f64| (!secs.is_empty()).then(|| secs[((secs.len() - 1) as f64 * q).round() as usize]);
        let now = Instant::now();
        let images: usize = recent.iter().filter(|c| now.duration_since(c.at) <= RATE_SPAN).map(|c| c.images).sum();
        (at(0.5), at(0.95), images as f64)
    }

    pub fn snapshot(&self, queue_length: usize, queue_capacity: usize, started: Instant) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (p50, p95, recent_images) = self.percentiles();
        let uptime = started.elapsed().as_secs_f64();
        Snapshot {
            queue_length,
            queue_capacity,
            running_requests: get(&self.running),
            requests_total: get(&self.requests),
            requests_completed: get(&self.completed),
            requests_rejected_queue_full: get(&self.rejected_full),
            requests_rejected_invalid: get(&self.rejected_invalid),
            requests_cancelled: get(&self.cancelled),
            requests_failed: get(&self.failed),
            images_total: get(&self.images),
            sampler_calls: get(&self.sampler_calls),
            sampler_calls_cancelled: get(&self.sampler_calls_cancelled),
            images_per_second: recent_images / uptime.min(RATE_SPAN.as_secs_f64()).max(1e-3),
            latency_p50_secs: p50,
            latency_p95_secs: p95,
            uptime_secs: uptime,
        }
    }
}

impl Snapshot {
    /// The Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!("# HELP dalle_{name} {help}\n# TYPE dalle_{name} {kind}\ndalle_{name} {value}\n"));
        };
        line("queue_length", "gauge", "Requests waiting for the model.", self.queue_length as f64);
        line("queue_capacity", "gauge", "Requests that may wait before 429.", self.queue_capacity as f64);
        line("running_requests", "gauge", "Requests in the current sampler call.", self.running_requests as f64);
        line("requests_total", "counter", "Generation requests received.", self.requests_total as f64);
        line("requests_completed_total", "counter", "Requests answered with images.", self.requests_completed as f64);
        line("requests_rejected_queue_full_total", "counter", "Requests refused with 429.", self.requests_rejected_queue_full as f64);
        line("requests_rejected_invalid_total", "counter", "Requests refused as invalid (4xx).", self.requests_rejected_invalid as f64);
        line("requests_cancelled_total", "counter", "Requests whose client disconnected.", self.requests_cancelled as f64);
        line("requests_failed_total", "counter", "Requests that failed in the model.", self.requests_failed as f64);
        line("images_total", "counter", "Images generated.", self.images_total as f64);
        line("sampler_calls_total", "counter", "Sampler calls (one per batch of compatible requests).", self.sampler_calls as f64);
        line("sampler_calls_cancelled_total", "counter", "Sampler calls stopped because every client left.", self.sampler_calls_cancelled as f64);
        line("images_per_second", "gauge", "Images completed per second over the last minute.", self.images_per_second);
        if let Some(v) = self.latency_p50_secs {
            line("latency_p50_seconds", "gauge", "Median request latency.", v);
        }
        if let Some(v) = self.latency_p95_secs {
            line("latency_p95_seconds", "gauge", "95th percentile request latency.", v);
        }
        line("uptime_seconds", "gauge", "Seconds since the server started.", self.uptime_secs);
        out
    }
}
