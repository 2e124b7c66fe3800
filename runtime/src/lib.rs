//! # tessera-runtime
//!
//! Artifact loading, host tensors and execution on a backend.
#![deny(missing_docs)]
