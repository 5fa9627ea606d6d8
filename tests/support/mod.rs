//! Test servers shared by integration tests: a loopback fake of the GCS XML
//! API and a fake GCE metadata server, on a minimal HTTP/1.1 server.
#![allow(dead_code)]

pub mod gcs_fake;
pub mod http;
pub mod metadata_fake;
