//! # tessera
//!
//! A compiler and kernel toolchain for a Trainium/Inferentia-style accelerator, with a CPU
//! emulator so everything runs without the chip.
#![deny(missing_docs)]

pub use tessera_backends as backends;
pub use tessera_compiler as compiler;
pub use tessera_ir as ir;
pub use tessera_kernels as kernels;
pub use tessera_runtime as runtime;
