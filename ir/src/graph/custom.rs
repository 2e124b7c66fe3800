//! Custom operators: nodes whose kernel an application registers with the compiler
//! (`tessera_compiler::custom`) rather than the kernel library providing it.
//!
//! The graph only records what the rest of the compiler needs to treat the node as an opaque
//! operator: its ONNX domain and type, its attributes, the operand and result types fixed when
//! the node was imported (the registered shape rule ran then), and the estimated time of its
//! kernel (the registered kernel was built and estimated then). The kernel itself is built
//! again from the registry when the graph is lowered.

use super::TensorType;

/// One attribute of a custom node, as the ONNX node carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum CustomAttr {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOATS`.
    Floats(Vec<f64>),
    /// `STRING` (UTF-8, lossily).
    Str(String),
}

/// A custom operator node.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomOp {
    /// ONNX domain, e.g. `com.example`.
    pub domain: String,
    /// ONNX operator type, e.g. `FastRmsNorm`.
    pub op_type: String,
    /// The node's attributes, by name.
    pub attrs: Vec<(String, CustomAttr)>,
    /// Operand types the node was imported with.
    pub inputs: Vec<TensorType>,
    /// Result types the registered shape rule gave.
    pub outputs: Vec<TensorType>,
    /// Estimated time of the registered kernel on the target it was imported for, ns (what
    /// the optimiser's extraction compares).
    pub est_ns: f64,
}

impl CustomOp {
    /// `domain::op_type`, as messages and listings name it.
    pub fn qualified(&self) -> String {
        if self.domain.is_empty() {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        }
    }

    /// The attribute text printed with the node.
    pub fn attributes(&self) -> String {
        let mut parts = vec![format!("op={}", self.qualified())];
        for (k, v) in &self.attrs {
            let v = match v {
                CustomAttr::Int(i) => i.to_string(),
                CustomAttr::Float(f) => f.to_string(),
                CustomAttr::Ints(v) => format!("{v:?}"),
                CustomAttr::Floats(v) => format!("{v:?}"),
                CustomAttr::Str(s) => format!("{s:?}"),
            };
            parts.push(format!("{k}={v}"));
        }
        parts.join(", ")
    }
}
