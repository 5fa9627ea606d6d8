//! Load test (ignored by default; run with
//! `cargo test --test serve_load -- --ignored --nocapture`): 200 requests
//! from 20 concurrent clients over loopback on a tiny model. None may be
//! lost or fail other than by 429; prints p50/p95 latency and images/s, and
//! checks that memory (VmRSS) is stable between the first and last 50 requests.
mod serve_support;
use serde_json::json;
use serve_support::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 20;
const REQUESTS: usize = 200;
const IMAGES_PER_REQUEST: usize = 2;

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Outcome {
    latency: Duration,
    status: u16,
    rss_kib: u64,
}

#[test]
#[ignore = "load test: run with --ignored"]
fn two_hundred_requests_from_twenty_clients() {
    let dir = temp_dir("load");
    // The queue holds more than the clients can have waiting, so none should be refused.
    let options = dalle_xla::serve::ServeOptions { queue_capacity: 32, warm_up: true, ..test_options() };
    let server = TestServer::start(tiny_text_to_image(&dir), options);
    // Compiles the sampler for the shapes the load uses before timing.
    assert_eq!(server.post("/generate", &json!({"prompt": "warm", "n": IMAGES_PER_REQUEST}).to_string()).status, 200);
    let baseline = server.metrics();

    let next = Arc::new(Mutex::new(0usize));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::with_capacity(REQUESTS)));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (next, outcomes, addr) = (next.clone(), outcomes.clone(), server.addr);
            std::thread::spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n == REQUESTS {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let body = json!({"prompt": format!("client {c} request {i}: a red circle"), "n": IMAGES_PER_REQUEST, "seed": i});
                let t = Instant::now();
                let reply = request(addr, "POST", "/generate", body.to_string().as_bytes());
                let latency = t.elapsed();
                if reply.status == 200 {
                    let images = reply.json()["images"].as_array().map_or(0, |a| a.len());
                    assert_eq!(images, IMAGES_PER_REQUEST, "request {i}: {} images", images);
                } else {
                    assert_eq!(reply.status, 429, "request {i} failed: {}", reply.text());
                    assert!(reply.header("retry-after").is_some());
                }
                outcomes.lock().unwrap().push(Outcome { latency, status: reply.status, rss_kib: vm_rss_kib() });
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), REQUESTS, "every request answered");
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let refused = REQUESTS - ok.len();
    let mut secs: Vec<f64> = ok.iter().map(|o| o.latency.as_secs_f64()).collect();
    secs.sort_by(f64::total_cmp);
    let pct = |q: f64| secs[((secs.len() - 1) as f64 * q).round() as usize];
    let m = server.metrics();
    let calls = m["sampler_calls"].as_u64().unwrap() - baseline["sampler_calls"].as_u64().unwrap();
    let images = m["images_total"].as_u64().unwrap() - baseline["images_total"].as_u64().unwrap();
    assert_eq!(images as usize, ok.len() * IMAGES_PER_REQUEST, "the server counted every image answered");
    let first: u64 = outcomes[..50].iter().map(|o| o.rss_kib).max().unwrap();
    let last: u64 = outcomes[REQUESTS - 50..].iter().map(|o| o.rss_kib).max().unwrap();
    println!(
        "load: {REQUESTS} requests from {CLIENTS} clients in {wall:.1} s: {} answered 200, {refused} refused with 429, none lost\n\
         latency p50 {:.3} s, p95 {:.3} s; {:.1} images/s; {calls} sampler calls ({:.1} requests per call)\n\
         server p50 {} s, p95 {} s\n\
         VmRSS peak over the first 50 answers {:.1} MiB, over the last 50 {:.1} MiB",
        ok.len(),
        pct(0.5),
        pct(0.95),
        images as f64 / wall,
        (ok.len() as f64) / calls.max(1) as f64,
        m["latency_p50_secs"],
        m["latency_p95_secs"],
        first as f64 / 1024.0,
        last as f64 / 1024.0
    );
    assert_eq!(refused, 0, "with room in the queue for every client, none is refused");
    // Stable: no growth beyond allocator noise once warm.
    assert!(last <= first + 64 * 1024, "VmRSS grew from {first} KiB to {last} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
