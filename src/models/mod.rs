//! The models of DALL·E mini.

pub mod clip;
pub mod dallebart;
pub mod vqgan;
pub mod convert;
