//! # tessera-kernels
//!
//! The kernel builder DSL and the kernel library.
#![deny(missing_docs)]
