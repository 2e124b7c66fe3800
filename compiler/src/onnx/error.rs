//! [`ImportError`]: every way an ONNX model can fail to import, each naming the node (name and
//! op type), tensor or graph input at fault, so the CLI can print it as one paragraph.

use super::OnnxError;
use std::fmt;
use std::path::PathBuf;
use tessera_ir::graph::GraphError;

/// One node whose operator tessera does not import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The ONNX `op_type`.
    pub op_type: String,
    /// The node's name (or the generated `<op_type>_<index>`).
    pub node: String,
    /// The operator's domain; empty for the default `ai.onnx` domain.
    pub domain: String,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (node \"{}\"", self.op_type, self.node)?;
        if !self.domain.is_empty() && self.domain != "ai.onnx" {
            write!(f, ", domain {}", self.domain)?;
        }
        f.write_str(")")
    }
}

/// The list in [`ImportError::Unsupported`], comma separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOps(pub Vec<UnsupportedOp>);

impl fmt::Display for UnsupportedOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{op}")?;
        }
        // Operators of another domain are the application's own: say how to provide them.
        if let Some(op) = self
            .0
            .iter()
            .find(|o| !o.domain.is_empty() && o.domain != "ai.onnx")
        {
            write!(
                f,
                "; operators outside ai.onnx need a registered kernel: `--custom-op {}:{}=KERNEL.tile` on the command line, or `CustomOps` in the library (docs/custom-ops.md)",
                op.domain, op.op_type
            )?;
        }
        Ok(())
    }
}

/// Why an ONNX model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The model file could not be read.
    #[error("cannot read ONNX model {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error(transparent)]
    Decode(#[from] OnnxError),
    /// Operators tessera does not import; every such node of the model is listed.
    #[error("unsupported operators: {0}")]
    Unsupported(UnsupportedOps),
    /// A node's operands do not fit its operator (or a shape it computes is invalid).
    #[error("node \"{node}\" ({op_type}): {detail}")]
    Shape {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What does not fit.
        detail: String,
    },
    /// A value the compiler needs at compile time (a shape, axes, a range bound) is computed at
    /// run time. Static shapes are required; when `value` is a graph input it can be fixed at
    /// compile time (`CompileOptions::frozen_inputs`).
    #[error(
        "node \"{node}\" ({op_type}): {what} (\"{value}\") must be known at compile time, but it is computed at run time"
    )]
    NeedsConstant {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What the value is (`the shape input`, `start`, ...).
        what: String,
        /// The value's name.
        value: String,
    },
    /// A missing or invalid attribute (or a required input that is absent).
    #[error("node \"{node}\" ({op_type}): {detail}")]
    Attribute {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// Which attribute and what is wrong with it.
        detail: String,
    },
    /// An element type tessera has no dtype for.
    #[error("{what}: unsupported element type {elem_type}{detail}")]
    Type {
        /// The tensor, input or node concerned.
        what: String,
        /// The ONNX element type name.
        elem_type: String,
        /// Extra context (may be empty).
        detail: String,
    },
    /// A graph input whose shape is not fully static.
    #[error(
        "graph input \"{input}\": dimension {dim} is {what}; tessera compiles static shapes only, \
         so give the input a fixed shape (for example with onnxruntime's \
         make_dynamic_shape_fixed tool)"
    )]
    Symbolic {
        /// The graph input.
        input: String,
        /// Index of the dimension (or the rank when the whole shape is missing).
        dim: usize,
        /// What the dimension is (`symbolic "batch"`, `unknown`, ...).
        what: String,
    },
    /// An external data file that cannot be used.
    #[error("tensor \"{tensor}\": external data {detail}")]
    ExternalData {
        /// The tensor whose data lives outside the model.
        tensor: String,
        /// What is wrong (missing file, path outside the model folder, short read, ...).
        detail: String,
    },
    /// An opset (or an operator at this opset) tessera does not import.
    #[error("{detail}")]
    Opset {
        /// What is not supported, naming the node when one is concerned.
        detail: String,
    },
    /// A declared graph output type differs from the inferred one.
    #[error(
        "graph output \"{output}\" is declared as {declared} but the graph computes {inferred}"
    )]
    OutputMismatch {
        /// The output.
        output: String,
        /// The declared type.
        declared: String,
        /// The inferred type.
        inferred: String,
    },
    /// The model is structurally broken (a value used before it is defined, defined twice,
    /// a tensor whose data does not match its shape, ...).
    #[error("malformed model: {0}")]
    Malformed(String),
    /// The imported graph failed verification; this is a bug in the importer.
    #[error("the imported graph fails verification (an importer bug): {0}")]
    Verify(#[from] GraphError),
}

impl ImportError {
    /// A [`ImportError::Shape`] for a node.
    pub(crate) fn shape(node: &str, op_type: &str, detail: impl Into<String>) -> Self {
        ImportError::Shape {
            node: node.to_string(),
            op_type: op_type.to_string(),
            detail: detail.into(),
        }
    }

    /// An [`ImportError::Attribute`] for a node.
    pub(crate) fn attribute(node: &str, op_type: &str, detail: impl Into<String>) -> Self {
        ImportError::Attribute {
            node: node.to_string(),
            op_type: op_type.to_string(),
            detail: detail.into(),
        }
    }
}
