//! Running graphs: compile a [`Graph`](crate::graph::Graph) into a
//! [`Program`] and execute it on device buffers or host arrays.

pub mod compile_cache;
pub mod memory;
mod program;

pub use compile_cache::{CompileCache, CompileEnvironment};
pub use program::{download, Program, ProgramOptions};
