//! Graph-to-graph passes run before lowering.

pub mod auto_cast;
