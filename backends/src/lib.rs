//! # tessera-backends
//!
//! Execution backends. `interp` is the executable specification of the tile ISA.
#![deny(missing_docs)]

pub mod interp;
pub mod timing;
