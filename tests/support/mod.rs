//! Test servers shared by integration tests: a loopback fake of the GCS XML
//! API and a fake GCE metadata server, on a minimal HTTP/1.1 server; and a
//! harness that runs `dalle train` as a child process and follows its log.
#![allow(dead_code)]

pub mod gcs_fake;
pub mod http;
pub mod metadata_fake;
pub mod train_process;
