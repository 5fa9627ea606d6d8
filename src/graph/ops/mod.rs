//! The primitive set. Each file holds one family; each primitive holds its
//! shape rule, lowering and VJP together.

pub mod dot;
pub mod elementwise;
pub mod layout;
pub mod misc;
pub mod param;
pub mod reduce;
pub mod conv;
pub mod pool;
pub mod remat;
