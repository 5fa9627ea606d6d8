//! dalle-xla: DALL·E mini as a Rust training framework on XLA.
//!
//! Layers, each depending only on those above it:
//! - [`pjrt`]: the PJRT C API binding (plugins, clients, buffers, executables);
//! - [`graph`]: tensors, primitives, the StableHLO emitter and autodiff;
//! - [`runtime`]: compiling graphs and running them on host data.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dtype;
pub mod generate;
pub mod error;
pub mod graph;
pub mod models;
pub mod nn;
pub mod host;
pub mod optim;
pub mod pipeline;
pub mod pjrt;
pub mod plot;
pub mod runtime;
pub mod serve;
pub mod storage;
pub mod sweep;
pub mod train;
pub mod weights;

/// mimalloc for every allocation of the process, Rust's counted: see [`host::heap`].
#[global_allocator]
static ALLOCATOR: host::heap::CountingHeap = host::heap::CountingHeap;

pub use dtype::DType;
pub use error::{Error, Result};
pub use host::HostTensor;
