//! # tessera-compiler
//!
//! ONNX import, graph passes, the e-graph optimiser and lowering to tile programs. Today it
//! holds the ONNX protobuf schema and decoding ([`onnx`]); the rest lands with the end-to-end
//! work.
#![deny(missing_docs)]

pub mod driver;
pub mod lower;
pub mod onnx;
pub mod passes;
pub mod schedule;
