//! The primitive set. Each file holds one family; each primitive holds its
//! shape rule, lowering and VJP together.

pub mod collective;
pub mod control;
pub mod conv;
pub mod dot;
pub mod elementwise;
pub mod indexing;
pub mod layout;
pub mod misc;
pub mod param;
pub mod pool;
pub mod reduce;
pub mod remat;
pub mod sort;
