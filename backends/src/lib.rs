//! # tessera-backends
//!
//! Execution backends. `interp` is the executable specification of the tile ISA; `jit` runs
//! machine programs through Cranelift-compiled kernels and agrees with `interp` (exactly for
//! element-wise f32 work, within a documented tolerance for `nc_matmul`).
#![deny(missing_docs)]

pub mod interp;
pub mod jit;
mod tensors;
pub mod timing;

pub use tensors::TensorSet;
