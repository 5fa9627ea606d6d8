//! A loopback fake of the Google Cloud Storage XML API, enough for
//! `object_store`'s GCS backend: PUT (plain, create-only with
//! `x-goog-if-generation-match: 0`, copy with `x-goog-copy-source`), GET with
//! `Range`, HEAD, DELETE, `list-type=2` listing with prefix, delimiter,
//! start-after and continuation tokens, and XML multipart uploads. Objects
//! carry ETag, Last-Modified and generation headers.
//!
//! Faults can be injected: error statuses, dropped connections and slow
//! answers, for the next N requests (optionally only for one HTTP method,
//! and only for keys containing some text).

use super::http::{percent_decode, Handler, Reply, Request, Response, Server};
use dalle_xla::storage::{self, Location, RetryPolicy, StorageOptions};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A service-account key that makes the GCS backend skip OAuth.
pub const FAKE_SERVICE_ACCOUNT_KEY: &str = r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status (and an XML error body).
    Status(u16),
    /// Read the request, then close the connection without answering.
    Drop,
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Serve the request, then wait as long as its answer's body would take
    /// at this many bytes per second: one connection's bandwidth cap.
    Bandwidth(f64),
}

#[derive(Clone, Debug)]
pub struct Object {
    pub data: Vec<u8>,
    pub generation: u64,
    pub modified: SystemTime,
}

impl Object {
    fn etag(&self) -> String {
        format!("\"g{}\"", self.generation)
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Decoded object key (empty for bucket-level requests).
    pub key: String,
    pub query: Vec<(String, String)>,
    pub if_generation_match: Option<String>,
    pub status: u16,
}

struct InjectedFault {
    remaining: usize,
    fault: Fault,
    method: Option<String>,
    key_contains: Option<String>,
}

/// An upload in progress: bucket, key and the parts received by number.
type Upload = (String, String, BTreeMap<u32, Vec<u8>>);

#[derive(Default)]
struct State {
    objects: BTreeMap<(String, String), Object>,
    uploads: HashMap<String, Upload>,
    next_generation: u64,
    next_upload: u64,
    faults: VecDeque<InjectedFault>,
    log: Vec<Logged>,
    /// (method, key) of every request as it arrives, before faults and delays.
    arrivals: Vec<(String, String)>,
    /// Requests being handled (a `Delay` fault's among them).
    in_flight: usize,
    /// The most requests handled at once since the start or the last reset.
    peak_in_flight: usize,
    page_size: Option<usize>,
}

#[derive(Clone)]
pub struct GcsFake {
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
}

impl GcsFake {
    pub fn start() -> GcsFake {
        let state = Arc::new(Mutex::new(State { next_generation: 1, ..Default::default() }));
        let s = state.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            let reply = handle(&s, req);
            s.lock().unwrap_or_else(|e| e.into_inner()).in_flight -= 1;
            reply
        });
        GcsFake { state, server: Arc::new(Server::start(handler)) }
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Storage options that point the real GCS backend at this fake.
    pub fn options(&self, retry: RetryPolicy) -> StorageOptions {
        StorageOptions {
            retry,
            gcs_base_url: Some(self.base_url()),
            gcs_service_account_key: Some(FAKE_SERVICE_ACCOUNT_KEY.into()),
            ..Default::default()
        }
    }

    /// Opens `gs://bucket/prefix` on this fake.
    pub fn open(&self, bucket: &str, prefix: &str, retry: RetryPolicy) -> Location {
        storage::open_with(&format!("gs://{bucket}/{prefix}"), &self.options(retry)).expect("open the fake bucket")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `fault` to the next `times` requests (of `method` only, when given).
    pub fn inject(&self, times: usize, fault: Fault, method: Option<&str>) {
        self.lock().faults.push_back(InjectedFault { remaining: times, fault, method: method.map(str::to_string), key_contains: None });
    }

    /// Applies `fault` to the next `times` requests of `method` (any, when
    /// `None`) whose object key contains `key_contains`.
    pub fn inject_for_key(&self, times: usize, fault: Fault, method: Option<&str>, key_contains: &str) {
        self.lock().faults.push_back(InjectedFault {
            remaining: times,
            fault,
            method: method.map(str::to_string),
            key_contains: Some(key_contains.to_string()),
        });
    }

    /// (method, key) of every request so far, recorded on arrival: a request
    /// held by a `Delay` fault is here while it waits.
    pub fn arrivals(&self) -> Vec<(String, String)> {
        self.lock().arrivals.clone()
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// List pages of at most `n` entries, to exercise continuation tokens.
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = Some(n);
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<Object> {
        self.lock().objects.get(&(bucket.to_string(), key.to_string())).cloned()
    }

    /// Writes an object behind the client's back (to corrupt a file, say).
    pub fn put_object(&self, bucket: &str, key: &str, data: Vec<u8>) {
        let mut st = self.lock();
        let generation = st.next_generation;
        st.next_generation += 1;
        st.objects.insert((bucket.into(), key.into()), Object { data, generation, modified: SystemTime::now() });
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.lock().objects.keys().filter(|(b, _)| b == bucket).map(|(_, k)| k.clone()).collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Waits until no request is being handled: a request a killed client
    /// sent whole (held by a `Delay` fault, say) still lands after the client
    /// is gone, and what the bucket holds is only settled once it has.
    pub fn wait_idle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.lock().in_flight > 0 {
            assert!(std::time::Instant::now() < deadline, "the GCS fake was still handling requests after 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Multipart uploads started and neither completed nor aborted.
    /// The most requests handled at once since the last call.
    pub fn take_peak_in_flight(&self) -> usize {
        let mut st = self.lock();
        let now = st.in_flight;
        std::mem::replace(&mut st.peak_in_flight, now)
    }

    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }
}

fn take_fault(st: &mut State, method: &str, key: &str) -> Option<Fault> {
    let index = st.faults.iter().position(|f| {
        f.remaining > 0 && f.method.as_deref().is_none_or(|m| m == method) && f.key_contains.as_deref().is_none_or(|k| key.contains(k))
    })?;
    let f = &mut st.faults[index];
    f.remaining -= 1;
    let fault = f.fault.clone();
    if f.remaining == 0 {
        st.faults.remove(index);
    }
    Some(fault)
}

fn handle(state: &Mutex<State>, req: &Request) -> Reply {
    let (bucket, key) = split_target(&req.path);
    let fault = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.arrivals.push((req.method.clone(), key.clone()));
        st.in_flight += 1;
        st.peak_in_flight = st.peak_in_flight.max(st.in_flight);
        take_fault(&mut st, &req.method, &key)
    };
    let log = |status: u16| {
        state.lock().unwrap_or_else(|e| e.into_inner()).log.push(Logged {
            method: req.method.clone(),
            key: key.clone(),
            query: req.query.clone(),
            if_generation_match: req.header("x-goog-if-generation-match").map(str::to_string),
            status,
        })
    };
    match fault {
        Some(Fault::Status(code)) => {
            log(code);
            return Reply::Send(error(code, "InjectedFault", "injected by the test"));
        }
        Some(Fault::Drop) => {
            log(0);
            return Reply::Drop;
        }
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::Bandwidth(_)) | None => {}
    }
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let response = route(&mut st, req, &bucket, &key);
    drop(st);
    if let Some(Fault::Bandwidth(bytes_per_sec)) = fault {
        std::thread::sleep(Duration::from_secs_f64(response.body.len() as f64 / bytes_per_sec));
    }
    log(response.status);
    Reply::Send(response)
}

/// `/bucket/url-encoded-key` to (bucket, key).
fn split_target(path: &str) -> (String, String) {
    let path = path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    (percent_decode(bucket, false), percent_decode(key, false))
}

fn route(st: &mut State, req: &Request, bucket: &str, key: &str) -> Response {
    let method = req.method.as_str();
    if key.is_empty() {
        return match (method, req.query("list-type")) {
            ("GET", Some("2")) => list(st, req, bucket),
            _ => error(400, "InvalidArgument", "unsupported bucket request"),
        };
    }
    let id = (bucket.to_string(), key.to_string());
    match method {
        "PUT" if req.query("uploadId").is_some() => put_part(st, req),
        "PUT" if req.header("x-goog-copy-source").is_some() => copy(st, req, id),
        "PUT" => put(st, req, id, req.body.clone()),
        "POST" if req.query.iter().any(|(k, _)| k == "uploads") => {
            st.next_upload += 1;
            let upload_id = format!("upload-{}", st.next_upload);
            st.uploads.insert(upload_id.clone(), (bucket.into(), key.into(), BTreeMap::new()));
            xml(200, &format!(
                "<InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>",
                escape(bucket),
                escape(key)
            ))
        }
        "POST" if req.query("uploadId").is_some() => complete(st, req, id),
        "DELETE" if req.query("uploadId").is_some() => {
            st.uploads.remove(req.query("uploadId").unwrap_or_default());
            Response::new(204)
        }
        "DELETE" => match st.objects.remove(&id) {
            Some(_) => Response::new(204),
            None => not_found(key),
        },
        "GET" | "HEAD" => get(st, req, &id, method == "HEAD"),
        _ => error(400, "InvalidArgument", &format!("unsupported method {method}")),
    }
}

fn precondition_fails(st: &State, req: &Request, id: &(String, String)) -> bool {
    match req.header("x-goog-if-generation-match") {
        None => false,
        Some("0") => st.objects.contains_key(id),
        Some(g) => st.objects.get(id).is_none_or(|o| o.generation.to_string() != g),
    }
}

fn put(st: &mut State, req: &Request, id: (String, String), data: Vec<u8>) -> Response {
    if precondition_fails(st, req, &id) {
        return error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.");
    }
    let generation = st.next_generation;
    st.next_generation += 1;
    let object = Object { data, generation, modified: SystemTime::now() };
    let response = Response::new(200).header("ETag", object.etag()).header("x-goog-generation", generation.to_string());
    st.objects.insert(id, object);
    response
}

fn copy(st: &mut State, req: &Request, to: (String, String)) -> Response {
    let source = req.header("x-goog-copy-source").unwrap_or_default();
    let (bucket, key) = split_target(source);
    match st.objects.get(&(bucket, key.clone())) {
        None => not_found(&key),
        Some(o) => {
            let data = o.data.clone();
            put(st, req, to, data)
        }
    }
}

fn put_part(st: &mut State, req: &Request) -> Response {
    let upload_id = req.query("uploadId").unwrap_or_default();
    let Some(number) = req.query("partNumber").and_then(|n| n.parse::<u32>().ok()) else {
        return error(400, "InvalidArgument", "bad partNumber");
    };
    let Some((_, _, parts)) = st.uploads.get_mut(upload_id) else {
        return error(404, "NoSuchUpload", "no such upload");
    };
    parts.insert(number, req.body.clone());
    Response::new(200).header("ETag", format!("\"part-{number}-{}\"", req.body.len()))
}

fn complete(st: &mut State, req: &Request, id: (String, String)) -> Response {
    let upload_id = req.query("uploadId").unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let numbers: Vec<u32> = tag_values(&body, "PartNumber").iter().filter_map(|n| n.parse().ok()).collect();
    let Some((_, _, parts)) = st.uploads.get(&upload_id) else {
        return error(404, "NoSuchUpload", "no such upload");
    };
    let mut data = Vec::new();
    for n in &numbers {
        match parts.get(n) {
            Some(p) => data.extend_from_slice(p),
            None => return error(400, "InvalidPart", &format!("part {n} was never uploaded")),
        }
    }
    st.uploads.remove(&upload_id);
    let response = put(st, req, id, data);
    if response.status != 200 {
        return response;
    }
    let etag = response.headers.iter().find(|(k, _)| k == "ETag").map(|(_, v)| v.clone()).unwrap_or_default();
    let mut out = xml(200, &format!("<CompleteMultipartUploadResult><ETag>{}</ETag></CompleteMultipartUploadResult>", escape(&etag)));
    out.headers.extend(response.headers.into_iter().filter(|(k, _)| k == "x-goog-generation"));
    out
}

fn get(st: &State, req: &Request, id: &(String, String), head: bool) -> Response {
    let Some(o) = st.objects.get(id) else { return not_found(&id.1) };
    let len = o.data.len();
    let base = |status| {
        Response::new(status)
            .header("ETag", o.etag())
            .header("Last-Modified", http_date(o.modified))
            .header("x-goog-generation", o.generation.to_string())
    };
    let Some(range) = req.header("range") else {
        let mut r = base(200).body(o.data.clone());
        r.omit_body = head;
        return r;
    };
    let Some((start, end)) = parse_range(range, len) else {
        return error(416, "InvalidRange", "The requested range cannot be satisfied.").header("Content-Range", format!("bytes */{len}"));
    };
    let mut r = base(206).header("Content-Range", format!("bytes {start}-{end}/{len}")).body(o.data[start..=end].to_vec());
    r.omit_body = head;
    r
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` to an inclusive range within `len`.
pub fn parse_range(header: &str, len: usize) -> Option<(usize, usize)> {
    let spec = header.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(len.checked_sub(1)?)),
    };
    (start <= end && start < len).then_some((start, end))
}

fn list(st: &State, req: &Request, bucket: &str) -> Response {
    let prefix = req.query("prefix").unwrap_or_default();
    let delimiter = req.query("delimiter").filter(|d| !d.is_empty());
    let start_after = req.query("start-after").unwrap_or_default();
    let token = req.query("continuation-token").unwrap_or_default();
    let max_keys = req.query("max-keys").and_then(|n| n.parse().ok()).unwrap_or(1000usize);
    let page = st.page_size.map_or(max_keys, |p| p.min(max_keys)).max(1);

    // Entries in key order: objects, and common prefixes (folded under the delimiter).
    let mut entries: BTreeMap<String, Option<&Object>> = BTreeMap::new();
    for ((b, key), o) in &st.objects {
        if b != bucket || !key.starts_with(prefix) {
            continue;
        }
        match delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| (i, d))) {
            Some((i, d)) => {
                entries.insert(key[..prefix.len() + i + d.len()].to_string(), None);
            }
            None => {
                entries.insert(key.clone(), Some(o));
            }
        }
    }
    let after = if token.is_empty() { start_after } else { token };
    let mut body = String::from("<ListBucketResult>");
    let mut last: Option<&String> = None;
    let mut next = None;
    for (count, (name, entry)) in entries.iter().filter(|(k, _)| after.is_empty() || k.as_str() > after).enumerate() {
        if count == page {
            next = last.cloned();
            break;
        }
        match entry {
            Some(o) => body.push_str(&format!(
                "<Contents><Key>{}</Key><Size>{}</Size><LastModified>{}</LastModified><ETag>{}</ETag></Contents>",
                escape(name),
                o.data.len(),
                rfc3339(o.modified),
                escape(&o.etag())
            )),
            None => body.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", escape(name))),
        }
        last = Some(name);
    }
    if let Some(token) = next {
        body.push_str(&format!("<NextContinuationToken>{}</NextContinuationToken>", escape(&token)));
    }
    body.push_str("</ListBucketResult>");
    xml(200, &body)
}

fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].trim().to_string());
        rest = &after[j + close.len()..];
    }
    out
}

fn xml(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "application/xml; charset=UTF-8")
        .body(format!("<?xml version='1.0' encoding='UTF-8'?>{body}"))
}

fn error(status: u16, code: &str, message: &str) -> Response {
    xml(status, &format!("<Error><Code>{code}</Code><Message>{}</Message></Error>", escape(message)))
}

fn not_found(key: &str) -> Response {
    error(404, "NoSuchKey", &format!("The specified key does not exist: {key}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// (year, month, day, hour, minute, second, weekday 0 = Sunday) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, usize) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since the epoch to a proleptic Gregorian date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (year, month, day, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32, weekday)
}

pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s, wd) = civil(t);
    format!("{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT", DAYS[wd], MONTHS[(mo - 1) as usize])
}

pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}
