//! Polls the GCE metadata server for preemption and maintenance notices.
//!
//! A Spot VM gets SIGTERM about 30 s before it is stopped; the metadata server
//! may say so a little earlier, and it also announces host maintenance, which
//! on a TPU VM ends the VM as well. Either sets the run's [`StopSignal`].

use super::preemption::{StopReason, StopSignal};
use super::CheckpointError;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const PREEMPTED_PATH: &str = "/computeMetadata/v1/instance/preempted";
const MAINTENANCE_PATH: &str = "/computeMetadata/v1/instance/maintenance-event";
/// Metadata answers are a word or two; anything longer is not the metadata server.
const MAX_RESPONSE_BYTES: u64 = 64 << 10;

#[derive(Clone, Debug, PartialEq)]
pub struct MetadataWatcherConfig {
    /// `http://host[:port]`, normally `http://metadata.google.internal`.
    pub base_url: String,
    pub interval: Duration,
    pub request_timeout: Duration,
    /// Treat a maintenance event (anything but `NONE`) as a reason to stop.
    pub stop_on_maintenance: bool,
}

impl Default for MetadataWatcherConfig {
    fn default() -> Self {
        MetadataWatcherConfig {
            base_url: "http://metadata.google.internal".into(),
            interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            stop_on_maintenance: true,
        }
    }
}

/// The polling thread; dropping the watcher stops it.
pub struct MetadataWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    failed_polls: Arc<AtomicU64>,
}

impl MetadataWatcher {
    pub fn start(config: MetadataWatcherConfig, signal: StopSignal) -> Result<Self, CheckpointError> {
        let endpoint = Endpoint::parse(&config.base_url)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let failed_polls = Arc::new(AtomicU64::new(0));
        let failures = failed_polls.clone();
        let thread = std::thread::Builder::new()
            .name("metadata-watcher".into())
            .spawn(move || watch(&endpoint, &config, &signal, &stopped, &failures))
            .map_err(|e| CheckpointError::Invalid(format!("cannot start the metadata watcher thread: {e}")))?;
        Ok(MetadataWatcher { stop: Some(stop), thread: Some(thread), failed_polls })
    }

    /// Polls that got no usable answer (the server unreachable or answering an error).
    pub fn failed_polls(&self) -> u64 {
        self.failed_polls.load(Ordering::SeqCst)
    }

    /// Whether the thread ended (it does once it has set the signal).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for MetadataWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(endpoint: &Endpoint, config: &MetadataWatcherConfig, signal: &StopSignal, stopped: &mpsc::Receiver<()>, failures: &AtomicU64) {
    loop {
        match poll_once(endpoint, config) {
            Ok(Some(reason)) => {
                tracing::warn!("{reason}: stopping after a final checkpoint");
                signal.request(reason);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                if failures.fetch_add(1, Ordering::SeqCst) == 0 {
                    tracing::warn!("cannot read the metadata server at {} (still polling): {e}", config.base_url);
                }
            }
        }
        if signal.is_set() {
            return;
        }
        match stopped.recv_timeout(config.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

fn poll_once(endpoint: &Endpoint, config: &MetadataWatcherConfig) -> Result<Option<StopReason>, String> {
    let preempted = endpoint.get(PREEMPTED_PATH, config.request_timeout)?;
    if preempted.trim().eq_ignore_ascii_case("TRUE") {
        return Ok(Some(StopReason::Preempted));
    }
    if config.stop_on_maintenance {
        let event = endpoint.get(MAINTENANCE_PATH, config.request_timeout)?;
        let event = event.trim();
        if !event.is_empty() && event != "NONE" {
            return Ok(Some(StopReason::Maintenance));
        }
    }
    Ok(None)
}

/// Just enough HTTP/1.1 to GET a short text from the metadata server, which
/// is plain HTTP on the VM's own network.
struct Endpoint {
    host: String,
    port: u16,
    base_path: String,
}

impl Endpoint {
    fn parse(base_url: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Invalid(format!("metadata server URL '{base_url}' {why}"));
        let url = url::Url::parse(base_url).map_err(|e| bad(&format!("does not parse: {e}")))?;
        if url.scheme() != "http" {
            return Err(bad("must use http://"));
        }
        let host = url.host_str().ok_or_else(|| bad("names no host"))?.to_string();
        let port = url.port().unwrap_or(80);
        Ok(Endpoint { host, port, base_path: url.path().trim_end_matches('/').to_string() })
    }

    fn get(&self, path: &str, timeout: Duration) -> Result<String, String> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.host))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n",
            self.base_path, self.host
        );
        stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send the request: {e}"))?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut response).map_err(|e| format!("cannot read the answer: {e}"))?;
        parse_response(&response)
    }
}

/// The body of a `200 OK` answer (with `Content-Length`, chunked, or until close).
fn parse_response(response: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("the answer has no complete header")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("the server answered '{status_line}'"));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunked body")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nTRUE").unwrap(), "TRUE");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nTR\r\n2\r\nUE\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "TRUE");
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err().contains("404"));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn only_http_urls_with_a_host() {
        assert!(Endpoint::parse("https://metadata.google.internal").is_err());
        assert!(Endpoint::parse("not a url").is_err());
        let e = Endpoint::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.base_path.as_str()), ("127.0.0.1", 8080, "/base"));
    }
}
