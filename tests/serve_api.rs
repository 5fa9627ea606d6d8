//! `dalle serve`'s HTTP API on a tiny random-weight model: dalle-mini's
//! `POST /generate` protocol and our richer form, batching of concurrent
//! compatible requests into one sampler call, the bounded queue (429),
//! cancellation when clients disconnect, and every kind of bad input.
mod serve_support;
use serde_json::{json, Value};
use serve_support::*;
use std::io::Write;

fn images(reply: &Value) -> Vec<String> {
    serde_json::from_value(reply["images"].clone()).unwrap()
}

#[test]
fn the_dalle_mini_protocol_and_the_richer_form_round_trip_and_bad_input_is_refused() {
    let dir = temp_dir("api");
    let server = TestServer::start(tiny_text_to_image(&dir), test_options());

    // dalle-mini's gradio/streamlit backend call: {"prompt": ...} -> {"images": [base64 PNG...]}.
    let reply = server.post("/generate", r#"{"prompt": "a red circle at the top"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-type").unwrap().starts_with("application/json"));
    let body = reply.json();
    let first = images(&body);
    assert_eq!(first.len(), 2, "the default number of images");
    for img in &first {
        assert_eq!(png_size(img), (16, 16));
    }
    assert_eq!(body["scores"], Value::Null, "no CLIP model: no scores");

    // The richer form: options in, seed/candidates/timings out; a seed reproduces its images.
    let rich = json!({"prompt": "two blue squares", "n": 3, "seed": 7, "condition_scale": 3.0, "top_k": 8, "top_p": 0.9, "temperature": 0.8});
    let a = server.post("/generate", &rich.to_string()).json();
    assert_eq!(images(&a).len(), 3);
    assert_eq!(a["seed"], 7);
    assert_eq!(a["candidates"], json!([0, 1, 2]));
    assert_eq!(a["settings"]["top_k"], 8);
    assert_eq!(a["prompt_tokens_cut"], 0);
    assert!(a["timings"]["sample_secs"].as_f64().unwrap() > 0.0);
    assert!(a["timings"]["total_secs"].as_f64().unwrap() >= a["timings"]["sample_secs"].as_f64().unwrap());
    assert_eq!(a["timings"]["batch_requests"], 1);
    let again = server.post("/generate", &rich.to_string()).json();
    assert_eq!(images(&a), images(&again), "the same seed gives the same images");
    let mut other = rich.clone();
    other["seed"] = json!(8);
    assert_ne!(images(&a), images(&server.post("/generate", &other.to_string()).json()), "another seed gives other images");
    let greedy = server.post("/generate", r#"{"prompt": "a small green triangle", "greedy": true, "condition_scale": 1, "n": 1}"#).json();
    assert_eq!(greedy["settings"]["sample"], false);

    // A prompt longer than the model reads is cut, as generation does.
    let long = json!({"prompt": "a red circle ".repeat(40), "n": 1});
    let cut = server.post("/generate", &long.to_string()).json();
    assert!(cut["prompt_tokens_cut"].as_u64().unwrap() > 0, "{cut}");

    // Health and metrics.
    let health = server.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["clip"], false);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<form") && !page.text().contains("src=\"http"), "a self-contained page");
    let prometheus = server.get("/metrics").text();
    assert!(prometheus.contains("dalle_requests_completed_total 6"), "{prometheus}");
    assert!(prometheus.contains("dalle_latency_p95_seconds"), "{prometheus}");

    // Bad input: each refused with the status and a message naming the field.
    let refused = |body: &str, status: u16, needle: &str| {
        let r = server.post("/generate", body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{body}: the message should mention '{needle}': {message}");
    };
    let bad: &[(&str, u16, &str)] = &[
        (r#"{"prompt": "x", "steps": 10}"#, 400, "steps"),
        (r#"{"prompt": "x", "n": "three"}"#, 400, "'n'"),
        (r#"{"prompt": 5}"#, 400, "'prompt'"),
        (r#"{"prompt": "x", "seed": -1}"#, 400, "'seed'"),
        (r#"{"prompt": "x", "greedy": "yes"}"#, 400, "'greedy'"),
        (r#"{}"#, 400, "prompt"),
        (r#"["a red circle"]"#, 400, "JSON object"),
        ("a red circle", 400, "not valid JSON"),
        (r#"{"prompt": "x"} trailing"#, 400, "after the JSON"),
        (r#"{"prompt": "   "}"#, 400, "empty"),
        (r#"{"prompt": ""}"#, 400, "empty"),
        (r#"{"prompt": "x", "n": 0}"#, 400, "'n' must be in 1..=8"),
        (r#"{"prompt": "x", "n": 1000000}"#, 400, "'n' must be in 1..=8"),
        (r#"{"prompt": "x", "top_k": 0}"#, 400, "'top_k'"),
        (r#"{"prompt": "x", "top_k": 100000}"#, 400, "'top_k'"),
        (r#"{"prompt": "x", "top_p": 1.5}"#, 400, "'top_p'"),
        (r#"{"prompt": "x", "top_p": 0}"#, 400, "'top_p'"),
        (r#"{"prompt": "x", "condition_scale": -1}"#, 400, "'condition_scale'"),
        (r#"{"prompt": "x", "condition_scale": 1e30}"#, 400, "'condition_scale'"),
        (r#"{"prompt": "x", "temperature": 0}"#, 400, "'temperature'"),
        (r#"{"prompt": "x", "temperature": 1e9}"#, 400, "'temperature'"),
        (r#"{"prompt": "x", "greedy": true, "top_k": 4}"#, 400, "greedy"),
    ];
    for (body, status, needle) in bad {
        refused(body, *status, needle);
    }
    let huge = json!({"prompt": "a red circle ".repeat(1000)}).to_string();
    refused(&huge, 413, "larger than the limit of 4096 bytes");
    assert_eq!(server.get("/generate").status, 405);
    assert_eq!(server.get("/nowhere").status, 404);
    assert_eq!(server.get("/metrics?format=xml").status, 400);
    assert_eq!(server.metrics()["requests_rejected_invalid"], bad.len() as u64 + 1);

    // Slow clients hold only their own connection: one that sends half its
    // headers and one that sends half its body, while another is served.
    let mut slow_head = connect(server.addr);
    slow_head.write_all(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-").unwrap();
    let mut slow_body = connect(server.addr);
    slow_body.write_all(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": \"a").unwrap();
    let served = server.post("/generate", r#"{"prompt": "a big yellow star", "n": 1}"#);
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(server.get("/health").status, 200);
    drop((slow_head, slow_body));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_requests_are_batched_the_queue_is_bounded_and_disconnects_cancel() {
    let dir = temp_dir("queue");
    let (gate, observer) = Gate::closed();
    let options = dalle_xla::serve::ServeOptions { queue_capacity: 2, chunk_observer: Some(observer), ..test_options() };
    let server = TestServer::start(tiny_text_to_image(&dir), options);
    let addr = server.addr;
    let post = move |body: Value| std::thread::spawn(move || request(addr, "POST", "/generate", body.to_string().as_bytes()));
    let mut arrivals = 0;
    // One chunk per 4 of the 16 positions; a request of up to 4 images is one
    // program batch (2 per device, 2 devices). Letting a held request's 4
    // chunks through stops the worker at the first chunk of the next call.
    let chunks_per_batch = 4;

    // 1. Batching: while the worker is held inside request C, A and B (same
    // settings) and D (another condition scale) queue; A and B share one
    // sampler call, D gets its own. Two waiting fill the queue: E is refused with 429.
    let c = post(json!({"prompt": "a red circle", "n": 1}));
    arrivals += 1;
    gate.wait_arrivals(arrivals);
    let a = post(json!({"prompt": "two blue squares", "n": 2, "seed": 1}));
    server.wait_metric("queue_length", 1);
    let b = post(json!({"prompt": "a small green triangle", "n": 1, "seed": 2}));
    server.wait_metric("queue_length", 2);
    let full = server.post("/generate", &json!({"prompt": "a big yellow star"}).to_string());
    assert_eq!(full.status, 429, "{}", full.text());
    let retry: u64 = full.header("retry-after").expect("a Retry-After header").parse().unwrap();
    assert!(retry >= 1);
    assert!(full.json()["error"].as_str().unwrap().contains("queue is full"));
    assert_eq!(server.metrics()["requests_rejected_queue_full"], 1);
    gate.allow(chunks_per_batch);
    arrivals += chunks_per_batch;
    gate.wait_arrivals(arrivals);
    // C is done and A+B started together: D (other settings) can queue now.
    let d = post(json!({"prompt": "a big yellow star", "n": 1, "condition_scale": 2.0}));
    server.wait_metric("queue_length", 1);
    gate.open();
    let replies: Vec<Value> = [c, a, b, d].into_iter().map(|t| {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }).collect();
    let batch = |r: &Value| (r["timings"]["batch_requests"].as_u64().unwrap(), r["timings"]["batch_images"].as_u64().unwrap());
    assert_eq!(batch(&replies[0]), (1, 1), "C ran alone");
    assert_eq!(batch(&replies[1]), (2, 3), "A and B shared one sampler call");
    assert_eq!(batch(&replies[2]), (2, 3));
    assert_eq!(batch(&replies[3]), (1, 1), "D's settings differ: a call of its own");
    assert_eq!(images(&replies[1]).len(), 2);
    assert_eq!(server.metrics()["sampler_calls"], 3);
    // Batching does not change a request's images: A alone gives the same.
    let a_alone = server.post("/generate", &json!({"prompt": "two blue squares", "n": 2, "seed": 1}).to_string()).json();
    assert_eq!(images(&a_alone), images(&replies[1]));
    assert_eq!(server.metrics()["sampler_calls"], 4);
    let arrivals_so_far = gate.wait_arrivals(0).len() as u64;

    // 2. A client alone in its call disconnects mid-generation: the call stops.
    gate.close();
    let calls = server.metrics()["sampler_calls"].as_u64().unwrap();
    let images_before = server.metrics()["images_total"].as_u64().unwrap();
    let mut gone = Events::open(addr, &json!({"prompt": "a red circle", "n": 8}).to_string());
    assert_eq!(gone.status, 200);
    assert_eq!(gone.next().unwrap().0, "queued");
    let mut arrivals = arrivals_so_far + 1;
    gate.wait_arrivals(arrivals);
    gone.disconnect();
    let _ = server.get("/health");
    // Let the worker step chunk by chunk until it sees the client gone and stops the call.
    let start = std::time::Instant::now();
    'stepping: loop {
        let last = gate.wait_arrivals(arrivals).last().unwrap().clone();
        assert!(last.tokens_done < last.tokens_total, "the call finished before the disconnect was seen");
        gate.allow(1);
        loop {
            if server.metrics()["sampler_calls_cancelled"] == 1 {
                break 'stepping;
            }
            if gate.arrived() > arrivals {
                arrivals += 1;
                break;
            }
            assert!(start.elapsed() < PATIENCE, "the call neither stopped nor went on");
        }
    }
    let m = server.metrics();
    assert_eq!(m["requests_cancelled"], 1);
    assert_eq!(m["sampler_calls"], calls + 1);
    assert_eq!(m["images_total"], images_before, "a cancelled request produces no images");

    // 3. Two requests share a call and one client leaves: the other is still served.
    let occupy = post(json!({"prompt": "a red circle", "n": 1}));
    arrivals += 1;
    gate.wait_arrivals(arrivals);
    let leaving = send(addr, "POST", "/generate", json!({"prompt": "two blue squares", "n": 2, "seed": 3}).to_string().as_bytes());
    server.wait_metric("queue_length", 1);
    let staying = post(json!({"prompt": "a small green triangle", "n": 2, "seed": 4}));
    server.wait_metric("queue_length", 2);
    gate.allow(chunks_per_batch);
    arrivals += chunks_per_batch;
    let reports = gate.wait_arrivals(arrivals);
    assert_eq!(reports.last().unwrap().requests, 2, "both queued requests share the call");
    drop(leaving);
    let _ = server.get("/health");
    loop {
        let reports = gate.wait_arrivals(arrivals);
        let last = reports.last().unwrap();
        if last.connected == 1 {
            break;
        }
        assert!(last.tokens_done < last.tokens_total, "the call finished before the disconnect was seen");
        gate.allow(1);
        arrivals += 1;
    }
    gate.open();
    assert_eq!(occupy.join().unwrap().status, 200);
    let stayed = staying.join().unwrap();
    assert_eq!(stayed.status, 200, "{}", stayed.text());
    let stayed = stayed.json();
    assert_eq!(images(&stayed).len(), 2);
    assert_eq!(stayed["timings"]["batch_requests"], 2);
    let m = server.metrics();
    assert_eq!(m["requests_cancelled"], 2);
    assert_eq!(m["sampler_calls_cancelled"], 1, "the shared call went on for the client still there");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scores an image by its mean brightness: a stand-in for CLIP that makes the order checkable.
struct Brightness;

impl dalle_xla::generate::ImageScorer for Brightness {
    fn score(&self, _prompt: &str, images: &[image::RgbImage]) -> dalle_xla::Result<Vec<f32>> {
        Ok(images.iter().map(|i| i.as_raw().iter().map(|&v| v as f32).sum::<f32>() / i.as_raw().len() as f32).collect())
    }
}

#[test]
fn with_a_scorer_the_images_come_best_first_with_their_scores() {
    let dir = temp_dir("scored");
    let server = TestServer::start_scored(tiny_text_to_image(&dir), Some(Box::new(Brightness)), test_options());
    assert_eq!(server.get("/health").json()["clip"], true);
    let body = json!({"prompt": "a red circle", "n": 6, "seed": 3}).to_string();
    let ranked = server.post("/generate", &body).json();
    let scores: Vec<f32> = serde_json::from_value(ranked["scores"].clone()).unwrap();
    let candidates: Vec<usize> = serde_json::from_value(ranked["candidates"].clone()).unwrap();
    assert_eq!(scores.len(), 6);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    let mut sorted = candidates.clone();
    sorted.sort();
    assert_eq!(sorted, (0..6).collect::<Vec<_>>(), "a permutation of the candidates: {candidates:?}");
    // Each score is the brightness of the image shown beside it.
    use base64::Engine as _;
    for (img, score) in images(&ranked).iter().zip(&scores) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(img).unwrap();
        let rgb = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let brightness = rgb.as_raw().iter().map(|&v| v as f32).sum::<f32>() / rgb.as_raw().len() as f32;
        assert!((brightness - score).abs() < 1e-3, "{brightness} vs {score}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
