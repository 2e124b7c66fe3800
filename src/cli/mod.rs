//! The `tessera` command line: argument definitions and dispatch. Library errors are turned into
//! one clear message; the process exits non-zero on any error.

pub mod bench;
pub mod kernel;
pub mod model;
pub mod npy;
pub mod onnx_test;
pub mod profile;
