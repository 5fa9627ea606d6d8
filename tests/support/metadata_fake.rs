//! A fake GCE metadata server: answers `instance/preempted` and
//! `instance/maintenance-event` only when asked with `Metadata-Flavor: Google`.

use super::http::{Handler, Reply, Request, Response, Server};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    preempted: String,
    maintenance: String,
}

pub struct MetadataFake {
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    server: Server,
}

impl MetadataFake {
    /// A server that reports no preemption and no maintenance.
    pub fn start() -> MetadataFake {
        let state = Arc::new(Mutex::new(State { preempted: "FALSE".into(), maintenance: "NONE".into() }));
        let requests = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (s, n, r) = (state.clone(), requests.clone(), refused.clone());
        let handler: Handler = Arc::new(move |req: &Request| {
            n.fetch_add(1, Ordering::SeqCst);
            if req.header("metadata-flavor") != Some("Google") {
                r.fetch_add(1, Ordering::SeqCst);
                return Reply::Send(Response::new(403).body("missing Metadata-Flavor: Google"));
            }
            let st = s.lock().unwrap_or_else(|e| e.into_inner());
            let body = match req.path.as_str() {
                "/computeMetadata/v1/instance/preempted" => st.preempted.clone(),
                "/computeMetadata/v1/instance/maintenance-event" => st.maintenance.clone(),
                _ => return Reply::Send(Response::new(404)),
            };
            Reply::Send(Response::new(200).header("Content-Type", "application/text").header("Metadata-Flavor", "Google").body(body))
        });
        MetadataFake { state, requests, refused, server: Server::start(handler) }
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn set_preempted(&self, preempted: bool) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).preempted = if preempted { "TRUE" } else { "FALSE" }.into();
    }

    pub fn set_maintenance_event(&self, event: &str) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).maintenance = event.into();
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests refused for lacking the `Metadata-Flavor` header.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}
