//! Neural-network building blocks: named parameters, initialisers, layers.

mod init;
mod layer_stack;
mod layers;
mod torch;
mod vars;

pub use init::Init;
pub use layer_stack::{layer_stack, Layer, StackMode};
pub use layers::{cross_entropy, embedding, gelu, layer_norm, linear, Precision};
pub use vars::{ParamSpec, VarBuilder};
pub use torch::{quick_gelu, torch_embedding, torch_layer_norm, torch_linear};
