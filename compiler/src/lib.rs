//! # tessera-compiler
//!
//! ONNX import, graph passes, the e-graph optimiser and lowering to tile programs.
#![deny(missing_docs)]
