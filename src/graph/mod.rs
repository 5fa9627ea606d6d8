//! Computation graphs: tensors with static dtype and shape, a small primitive
//! set, lowering to StableHLO text, and reverse-mode autodiff.
//!
//! ```ignore
//! let g = Graph::new("affine");
//! let x = g.param("x", DType::F32, &[4, 3]);
//! let w = g.param("w", DType::F32, &[3, 2]);
//! let y = x.matmul(&w)?.tanh()?.sum_all()?;
//! let dw = grad(&y, &[&w])?;
//! ```

mod autodiff;
pub mod emit;
mod error;
mod function;
pub mod ops;
pub mod primitive;
pub mod random;
mod tensor;
mod tensor_conv;
mod tensor_ops;
mod types;

pub use autodiff::{grad, vjp};
pub use emit::{emit_module, ModuleOptions};
pub use error::{GraphError, Result};
pub use function::Function;
pub use ops::collective::{
    all_gather, all_gather_groups, all_reduce_sum, all_reduce_sum_groups, reduce_scatter_sum, reduce_scatter_sum_groups,
};
pub use ops::control::{fori_loop, fori_loop_storing, while_loop, Stores};
pub use ops::indexing::{GatherDims, ScatterDims};
pub use primitive::Primitive;
pub use tensor::{Graph, Tensor, ValueId};
pub use ops::conv::{ConvDims, Convolution};
pub use ops::remat::{optimization_barrier, remat};
pub use tensor_conv::same_padding;
pub use tensor_ops::broadcast_shapes;
pub use types::TensorType;
