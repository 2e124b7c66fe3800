//! Custom operators: an application's own kernels for ONNX operators the library does not
//! provide (or provides differently).
//!
//! A [`CustomOps`] registry maps an ONNX `(domain, op_type)` to a [`CustomKernel`]: a shape
//! rule, a kernel builder and a cost estimate. Compiling with the registry in
//! [`CompileOptions::custom_ops`](crate::driver::CompileOptions) makes the importer accept
//! nodes of the registered operators, runs the shape rule on them, builds and checks each
//! node's kernel against the target (every hardware rule, with the node named in the error),
//! lets the optimiser treat the node as an operator with the kernel's estimated time, and
//! links the kernel into the compiled program like a library kernel.
//!
//! The kernel is a [`TileProgram`] over HBM tensors: its `input` tensors, in declaration
//! order, are the node's operands and its `output` tensors its results, with exactly the
//! operand and result types. Kernels come from the Rust builder ([`register_fn`] with a
//! closure) or from a `.tile` file ([`TileFileKernel`], which is what `tessera compile
//! --custom-op` uses).
//!
//! ```
//! use tessera_compiler::custom::CustomOps;
//! use tessera_ir::graph::TensorType;
//!
//! let mut ops = CustomOps::new();
//! // `com.example::Double`: y = x + x, for any f32 [rows, cols] with rows <= 128.
//! ops.register_fn(
//!     "com.example",
//!     "Double",
//!     |inputs, _attrs| Ok(vec![inputs[0].clone()]),
//!     |req| {
//!         let (rows, cols) = (req.inputs[0].shape[0], req.inputs[0].shape[1]);
//!         Ok(tessera_kernels::library::binary(
//!             req.target,
//!             tessera_ir::AluOp::Add,
//!             &[rows, cols],
//!             &[rows, cols],
//!             tessera_ir::DType::F32,
//!         )?)
//!     },
//! );
//! assert!(ops.get("com.example", "Double").is_some());
//! ```
//!
//! [`register_fn`]: CustomOps::register_fn

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tessera_ir::graph::{CustomAttr, CustomOp, Graph, GraphOp, TensorType};
use tessera_ir::{TargetSpec, TensorKind, TileProgram};

/// What a kernel builder is asked for.
#[derive(Clone, Copy, Debug)]
pub struct KernelRequest<'a> {
    /// The target machine.
    pub target: &'a TargetSpec,
    /// The node's name.
    pub node: &'a str,
    /// Operand types.
    pub inputs: &'a [TensorType],
    /// Result types (what the shape rule gave).
    pub outputs: &'a [TensorType],
    /// The node's attributes.
    pub attrs: &'a [(String, CustomAttr)],
}

/// An error from a custom kernel's shape rule or builder.
pub type CustomError = Box<dyn std::error::Error + Send + Sync>;

/// A registered operator: shape rule, kernel builder and cost.
pub trait CustomKernel: Send + Sync {
    /// The result types for these operand types and attributes, or why they do not fit.
    fn infer(
        &self,
        inputs: &[TensorType],
        attrs: &[(String, CustomAttr)],
    ) -> Result<Vec<TensorType>, CustomError>;

    /// The kernel for one node: `input` tensors (in order) are the operands, `output` tensors
    /// the results.
    fn build(&self, request: &KernelRequest<'_>) -> Result<TileProgram, CustomError>;

    /// Estimated time of `kernel` (built for `request`), ns; what the optimiser compares. By
    /// default the kernel's own estimate from the instruction cost rules
    /// ([`tessera_ir::cost::estimate_tile_program`]).
    fn estimate_ns(&self, kernel: &TileProgram, request: &KernelRequest<'_>) -> f64 {
        tessera_ir::cost::estimate_tile_program(kernel, request.target).total_ns
    }

    /// Whether this kernel also computes the graph operator `op` on operands of types
    /// `inputs` (operands in the same order): the attributes to build it with, or `None`. When
    /// it does, the optimiser adds the custom node as one more alternative for every such
    /// e-graph node and extraction weighs its estimate against the library kernels'. By
    /// default a kernel serves only its own operator's nodes.
    fn alternative_for(
        &self,
        op: &GraphOp,
        inputs: &[TensorType],
    ) -> Option<Vec<(String, CustomAttr)>> {
        let _ = (op, inputs);
        None
    }
}

type InferFn = dyn Fn(&[TensorType], &[(String, CustomAttr)]) -> Result<Vec<TensorType>, CustomError>
    + Send
    + Sync;
type BuildFn = dyn Fn(&KernelRequest<'_>) -> Result<TileProgram, CustomError> + Send + Sync;

/// A [`CustomKernel`] made of two closures.
struct FnKernel {
    infer: Box<InferFn>,
    build: Box<BuildFn>,
}

impl CustomKernel for FnKernel {
    fn infer(
        &self,
        inputs: &[TensorType],
        attrs: &[(String, CustomAttr)],
    ) -> Result<Vec<TensorType>, CustomError> {
        (self.infer)(inputs, attrs)
    }

    fn build(&self, request: &KernelRequest<'_>) -> Result<TileProgram, CustomError> {
        (self.build)(request)
    }
}

/// The registry: `(domain, op_type)` to kernel. Cheap to clone (kernels are shared).
#[derive(Clone, Default)]
pub struct CustomOps {
    kernels: BTreeMap<(String, String), Arc<dyn CustomKernel>>,
}

impl fmt::Debug for CustomOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl CustomOps {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kernel` for ONNX nodes of `domain` and `op_type` (replacing an earlier one).
    pub fn register(
        &mut self,
        domain: &str,
        op_type: &str,
        kernel: impl CustomKernel + 'static,
    ) -> &mut Self {
        self.kernels
            .insert((domain.to_string(), op_type.to_string()), Arc::new(kernel));
        self
    }

    /// Registers a shape rule and a kernel builder given as closures.
    pub fn register_fn(
        &mut self,
        domain: &str,
        op_type: &str,
        infer: impl Fn(&[TensorType], &[(String, CustomAttr)]) -> Result<Vec<TensorType>, CustomError>
        + Send
        + Sync
        + 'static,
        build: impl Fn(&KernelRequest<'_>) -> Result<TileProgram, CustomError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register(
            domain,
            op_type,
            FnKernel {
                infer: Box::new(infer),
                build: Box::new(build),
            },
        )
    }

    /// The kernel registered for `domain` and `op_type`.
    pub fn get(&self, domain: &str, op_type: &str) -> Option<&Arc<dyn CustomKernel>> {
        self.kernels.get(&(domain.to_string(), op_type.to_string()))
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }

    /// Every registered `(domain, op_type, kernel)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Arc<dyn CustomKernel>)> {
        self.kernels
            .iter()
            .map(|((d, o), k)| (d.as_str(), o.as_str(), k))
    }

    /// Every registered operator as `domain::op_type`.
    pub fn names(&self) -> Vec<String> {
        self.kernels
            .keys()
            .map(|(d, o)| format!("{d}::{o}"))
            .collect()
    }
}

/// A kernel written in the `.tile` text format, for nodes whose operands have exactly the
/// types of its `input` tensors (in order); its `output` tensors are the results.
#[derive(Clone, Debug)]
pub struct TileFileKernel {
    program: TileProgram,
    source: String,
}

impl TileFileKernel {
    /// Parses `path` (errors point at `file:line:column`).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let source = path.display().to_string();
        let program = tessera_ir::text::parse(&text, &source).map_err(|e| e.to_string())?;
        Ok(TileFileKernel { program, source })
    }

    fn types(&self, kind: TensorKind) -> Vec<TensorType> {
        self.program
            .tensors
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| TensorType {
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect()
    }
}

fn list(types: &[TensorType]) -> String {
    types
        .iter()
        .map(|t| format!("{}{:?}", t.dtype, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CustomKernel for TileFileKernel {
    fn infer(
        &self,
        inputs: &[TensorType],
        _attrs: &[(String, CustomAttr)],
    ) -> Result<Vec<TensorType>, CustomError> {
        let want = self.types(TensorKind::Input);
        if inputs != want.as_slice() {
            return Err(format!(
                "the kernel in {} takes ({}), but the node's operands are ({})",
                self.source,
                list(&want),
                list(inputs)
            )
            .into());
        }
        Ok(self.types(TensorKind::Output))
    }

    fn build(&self, _request: &KernelRequest<'_>) -> Result<TileProgram, CustomError> {
        Ok(self.program.clone())
    }
}

/// Why a custom node's kernel was refused.
#[derive(Debug, thiserror::Error)]
#[error("node `{node}` ({op}): {detail}")]
pub struct CustomKernelError {
    /// The node.
    pub node: String,
    /// `domain::op_type`.
    pub op: String,
    /// What is wrong.
    pub detail: String,
}

/// Builds the kernel of the custom node `node` and checks it: its `input`/`output` tensors
/// must have the node's operand/result types, and it must keep every hardware rule of
/// `target`.
pub fn build_checked(
    ops: &CustomOps,
    node: &str,
    op: &CustomOp,
    target: &TargetSpec,
) -> Result<TileProgram, CustomKernelError> {
    let err = |detail: String| CustomKernelError {
        node: node.to_string(),
        op: op.qualified(),
        detail,
    };
    let kernel = ops
        .get(&op.domain, &op.op_type)
        .ok_or_else(|| err("no kernel is registered for this operator".into()))?;
    let program = kernel
        .build(&request(op, node, target))
        .map_err(|e| err(format!("the registered kernel builder failed: {e}")))?;
    for (kind, want, what) in [
        (TensorKind::Input, &op.inputs, "operands"),
        (TensorKind::Output, &op.outputs, "results"),
    ] {
        let got: Vec<TensorType> = program
            .tensors
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| TensorType {
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect();
        if &got != want {
            return Err(err(format!(
                "the kernel's {} tensors are ({}), but the node's {what} are ({})",
                if kind == TensorKind::Input {
                    "input"
                } else {
                    "output"
                },
                list(&got),
                list(want)
            )));
        }
    }
    tessera_ir::verify(&program, target)
        .map_err(|e| err(format!("the kernel breaks a hardware rule: {e}")))?;
    Ok(program)
}

/// What a kernel builder is asked for to compute `op` as the node `node`.
fn request<'a>(op: &'a CustomOp, node: &'a str, target: &'a TargetSpec) -> KernelRequest<'a> {
    KernelRequest {
        target,
        node,
        inputs: &op.inputs,
        outputs: &op.outputs,
        attrs: &op.attrs,
    }
}

/// Builds and checks `op`'s kernel ([`build_checked`]) and returns its estimated time, ns.
fn estimate(
    ops: &CustomOps,
    node: &str,
    op: &CustomOp,
    target: &TargetSpec,
) -> Result<f64, CustomKernelError> {
    let program = build_checked(ops, node, op, target)?;
    Ok(ops
        .get(&op.domain, &op.op_type)
        .map_or(0.0, |k| k.estimate_ns(&program, &request(op, node, target))))
}

/// Builds, checks and estimates the kernel of every custom node of `graph` for `target`,
/// recording each estimate in the node (what the optimiser's extraction compares).
pub fn prepare(
    graph: &mut Graph,
    ops: &CustomOps,
    target: &TargetSpec,
) -> Result<(), CustomKernelError> {
    for node in &mut graph.nodes {
        let GraphOp::Custom(op) = &mut node.op else {
            continue;
        };
        op.est_ns = estimate(ops, &node.name, op, target)?;
    }
    Ok(())
}

/// The custom node that computes `op` on `inputs` giving `outputs` with a registered kernel
/// offering itself as an alternative ([`CustomKernel::alternative_for`]), built, checked and
/// estimated for `target`; the cheapest when several offer. A kernel that fails to build or
/// breaks a hardware rule is not offered (the library's kernel stays the only choice).
pub fn alternative(
    ops: &CustomOps,
    op: &GraphOp,
    inputs: &[TensorType],
    outputs: &[TensorType],
    target: &TargetSpec,
) -> Option<CustomOp> {
    if matches!(op, GraphOp::Custom(_)) {
        return None;
    }
    let mut best: Option<CustomOp> = None;
    for (domain, op_type, kernel) in ops.iter() {
        let Some(attrs) = kernel.alternative_for(op, inputs) else {
            continue;
        };
        let mut node = CustomOp {
            domain: domain.to_string(),
            op_type: op_type.to_string(),
            attrs,
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            est_ns: 0.0,
        };
        let Ok(est_ns) = estimate(ops, "<alternative>", &node, target) else {
            continue;
        };
        node.est_ns = est_ns;
        if best.as_ref().is_none_or(|b| node.est_ns < b.est_ns) {
            best = Some(node);
        }
    }
    best
}
