//! # tessera-compiler
//!
//! ONNX import ([`onnx`]), graph passes ([`passes`]), the e-graph optimiser ([`opt`]), lowering
//! to tile programs ([`lower`]), scheduling ([`schedule`]) and the pipeline in one call
//! ([`driver`]).
#![deny(missing_docs)]

pub mod custom;
pub mod driver;
pub mod lower;
pub mod onnx;
pub mod opt;
pub mod passes;
pub mod schedule;
