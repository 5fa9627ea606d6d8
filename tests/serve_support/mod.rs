//! What the server tests share: a tiny random-weight text-to-image model
//! built through the library, an in-process server on a loopback port, a
//! gate that holds the model worker at chunk boundaries, and a small
//! HTTP/1.1 client on std sockets (so a test controls every byte and can
//! drop a connection at any moment).
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use dalle_xla::data::{train_tokenizer, TextEncoder};
use dalle_xla::generate::{ImageScorer, Sampler, TextToImage};
use dalle_xla::graph::Graph;
use dalle_xla::models::dallebart::{parameter_specs, DalleBartConfig};
use dalle_xla::models::vqgan::{Vqgan, VqganCodec, VqganConfig};
use dalle_xla::nn::{Init, VarBuilder};
use dalle_xla::serve::{ChunkReport, ServeOptions, Server};
use dalle_xla::DType;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Every wait in these tests gives up after this, so nothing hangs.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny DalleBart (16 image tokens, 64 codes) with random weights, a
/// tokenizer trained on a few captions, and a random VQGAN decoding 4x4
/// grids to 16x16 images; on 2 devices.
pub fn tiny_text_to_image(dir: &std::path::Path) -> TextToImage {
    let captions = dir.join("captions.txt");
    std::fs::write(&captions, "a red circle at the top\ntwo blue squares on the left\na small green triangle\na big yellow star\n").unwrap();
    let tokenizer = dir.join("tokenizer.json");
    train_tokenizer(&captions, 300, &tokenizer).unwrap();
    let config = DalleBartConfig { encoder_vocab_size: 320, ..DalleBartConfig::tiny() };
    let text = TextEncoder::load(&tokenizer.display().to_string(), config.max_text_length as usize).unwrap();
    let weights = parameter_specs(&config)
        .unwrap()
        .into_iter()
        .map(|s| {
            let init = if s.name.contains("LayerNorm") || s.name.contains("layernorm") || s.name.contains("final_ln") { s.init } else { Init::Normal(0.3) };
            let v = init.sample(3, &s.name, DType::F32, &s.ty.shape);
            (s.name, v)
        })
        .collect();
    let client = common::client();
    let replicas = 2;
    let sampler = Sampler::new(&client, config.clone(), &weights, "random tiny DalleBart", DType::F32, replicas).unwrap();
    let vq = VqganConfig { ch: 32, ch_mult: vec![1, 2, 2], attn_resolutions: vec![], n_embed: config.image_vocab_size, resolution: 16, ..VqganConfig::tiny() };
    let g = Graph::new("vqgan");
    let images = g.param("images", DType::F32, &[1, 16, 16, 3]);
    let vb = VarBuilder::new(&g, DType::F32);
    Vqgan::new(vq.clone()).reconstruct(&vb, &images).unwrap();
    let vq_weights = vb.specs().iter().map(|s| (s.name.clone(), s.init.sample(1, &s.name, DType::F32, &s.ty.shape))).collect();
    let codec = VqganCodec::new(&client, vq, &vq_weights, "random tiny VQGAN", 1, replicas).unwrap();
    TextToImage::new(sampler, text, codec).unwrap()
}

/// Options for tests: small requests, progress every 4 of the 16 positions, no warm-up.
pub fn test_options() -> ServeOptions {
    ServeOptions {
        queue_capacity: 8,
        default_images: 2,
        max_images: 8,
        batch_images: 16,
        rows_per_device: 2,
        preview_every: 4,
        body_limit: 4096,
        warm_up: false,
        chunk_observer: None,
    }
}

/// Holds the model worker at each chunk boundary until let through.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    permits: u64,
    arrivals: u64,
    reports: Vec<ChunkReport>,
}

impl Gate {
    /// A closed gate (every chunk waits) and the observer to give the server.
    pub fn closed() -> (Arc<Gate>, dalle_xla::serve::ChunkObserver) {
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        (gate, Arc::new(move |report: &ChunkReport| g.arrive(report)))
    }

    fn arrive(&self, report: &ChunkReport) {
        let mut s = self.state.lock().unwrap();
        s.arrivals += 1;
        s.reports.push(report.clone());
        self.changed.notify_all();
        let (s, timeout) = self.changed.wait_timeout_while(s, PATIENCE, |s| !s.open && s.permits == 0).unwrap();
        let mut s = s;
        assert!(!timeout.timed_out(), "the gate held the worker for {PATIENCE:?}");
        if !s.open {
            s.permits -= 1;
        }
    }

    /// Waits until `n` chunks have arrived in total; returns the reports.
    pub fn wait_arrivals(&self, n: u64) -> Vec<ChunkReport> {
        let s = self.state.lock().unwrap();
        let (s, timeout) = self.changed.wait_timeout_while(s, PATIENCE, |s| s.arrivals < n).unwrap();
        assert!(!timeout.timed_out(), "waited {PATIENCE:?} for chunk {n}; {} arrived", s.arrivals);
        s.reports.clone()
    }

    /// Chunks arrived so far.
    pub fn arrived(&self) -> u64 {
        self.state.lock().unwrap().arrivals
    }

    pub fn allow(&self, chunks: u64) {
        self.state.lock().unwrap().permits += chunks;
        self.changed.notify_all();
    }

    pub fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    pub fn close(&self) {
        self.state.lock().unwrap().open = false;
    }
}

/// A server on 127.0.0.1 (a free port) in its own thread and runtime; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(t2i: TextToImage, options: ServeOptions) -> TestServer {
        Self::start_scored(t2i, None, options)
    }

    pub fn start_scored(t2i: TextToImage, scorer: Option<Box<dyn ImageScorer + Send>>, options: ServeOptions) -> TestServer {
        let server = Server::start(t2i, scorer, options, "random tiny DalleBart".into()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                server.serve(listener, async move { let _ = stopped.await; }).await.unwrap();
            });
        });
        TestServer { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        request(self.addr, "POST", path, body.as_bytes())
    }

    pub fn metrics(&self) -> serde_json::Value {
        self.get("/metrics?format=json").json()
    }

    /// Polls `/metrics` until `field` reaches `value` (each poll is a round trip; gives up after PATIENCE).
    pub fn wait_metric(&self, field: &str, value: u64) {
        let start = std::time::Instant::now();
        loop {
            let m = self.metrics();
            if m[field].as_u64() == Some(value) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "metric {field} never reached {value}: {m}");
            std::thread::yield_now();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Sends a request with `Connection: close` (the answer is read later with [`read_reply`]).
pub fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut s = connect(addr);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    read_reply(send(addr, method, path, body))
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line '{line}'"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

/// Reads a whole response (length-delimited, chunked or until close).
pub fn read_reply(stream: TcpStream) -> Reply {
    let mut r = BufReader::new(stream);
    let (status, headers) = read_head(&mut r);
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut r) {
            body.extend(chunk);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Reply { status, headers, body }
}

fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let size = usize::from_str_radix(line.trim(), 16).ok()?;
    let mut chunk = vec![0; size + 2];
    r.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    (size > 0).then_some(chunk)
}

/// A server-sent event stream read event by event.
pub struct Events {
    reader: BufReader<TcpStream>,
    buffer: String,
    pub status: u16,
}

impl Events {
    pub fn open(addr: SocketAddr, body: &str) -> Events {
        let mut reader = BufReader::new(send(addr, "POST", "/generate/stream", body.as_bytes()));
        let (status, headers) = read_head(&mut reader);
        assert!(status != 200 || headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")), "{headers:?}");
        Events { reader, buffer: String::new(), status }
    }

    /// The next event's name and data (keep-alive comments skipped); `None` at the end.
    pub fn next(&mut self) -> Option<(String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let chunk = read_chunk(&mut self.reader)?;
            self.buffer.push_str(&String::from_utf8(chunk).unwrap());
        }
    }

    /// Closes the connection (the client goes away).
    pub fn disconnect(self) {
        let _ = self.reader.into_inner().shutdown(std::net::Shutdown::Both);
    }
}

/// Decodes a base64 PNG and returns its size.
pub fn png_size(b64: &str) -> (u32, u32) {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
    (img.width(), img.height())
}
