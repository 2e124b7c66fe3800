//! The graph IR: tensors flowing between operators, the level ONNX models are imported to and
//! graph passes and the e-graph optimiser work on.
//!
//! A [`Graph`] is in SSA form: every [`Value`] is produced once (by a node, or as a graph input
//! or constant) and has a static [`TensorType`]. Nodes are kept in topological order. The
//! meaning of each [`GraphOp`] is defined by the reference evaluator ([`eval`]), which is the
//! oracle that rewrites and lowering are tested against.

pub mod conv;
pub mod custom;
pub mod elementwise;
pub mod eval;
pub mod fused;
pub mod index;
pub mod movement;
pub mod ops;
pub mod print;
pub mod reduce;
pub mod scan;
pub mod verify;

pub use conv::{ConvSpec, PoolKind, PoolSpec};
pub use custom::{CustomAttr, CustomOp};
pub use elementwise::ElementwiseOp;
pub use eval::{EvalError, evaluate};
pub use fused::{
    Activation, AttentionSpec, ConvEpilogue, EwArg, EwInst, EwProgram, FusedOp, MatMulEpilogue,
    NormKind, NormSpec,
};
pub use index::{IndexOp, ScatterReduction};
pub use movement::{AxisSlice, MovementOp, PadMode};
pub use ops::{BinaryOp, GraphOp, ShapeError, UnaryOp};
pub use print::print_graph;
pub use reduce::{ReduceKind, ReduceSpec};
pub use scan::{ScanKind, ScanSpec};
pub use verify::{GraphError, verify_graph};

use crate::dtype::DType;
use crate::host::HostTensor;
use std::collections::BTreeMap;
use std::fmt;

/// Index of a value in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Element type and static shape of a tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (empty for a scalar).
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor type.
    pub fn new(dtype: DType, shape: &[usize]) -> Self {
        TensorType {
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// A named SSA value.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Name (from the model; unique within the graph).
    pub name: String,
    /// Its type.
    pub ty: TensorType,
}

/// One operator application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name (from the model, or generated), used in every message about the node.
    pub name: String,
    /// The operator and its attributes.
    pub op: GraphOp,
    /// Operands, positionally as the operator defines them.
    pub inputs: Vec<ValueId>,
    /// Results.
    pub outputs: Vec<ValueId>,
}

/// A tensor program in SSA form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Every value.
    pub values: Vec<Value>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Values supplied by the caller, in signature order.
    pub inputs: Vec<ValueId>,
    /// Values returned to the caller, in signature order.
    pub outputs: Vec<ValueId>,
    /// Values known at compile time (initializers and folded constants).
    pub constants: BTreeMap<ValueId, HostTensor>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            ty,
        });
        ValueId(self.values.len() as u32 - 1)
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.add_value(name, ty);
        self.inputs.push(id);
        id
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: HostTensor) -> ValueId {
        let ty = TensorType::new(tensor.dtype, &tensor.shape);
        let id = self.add_value(name, ty);
        self.constants.insert(id, tensor);
        id
    }

    /// Appends a node whose output types are inferred from its inputs; returns the outputs.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: GraphOp,
        inputs: &[ValueId],
    ) -> Result<Vec<ValueId>, GraphError> {
        let name = name.into();
        let types: Vec<&TensorType> = inputs
            .iter()
            .map(|v| {
                self.values.get(v.0 as usize).map(|x| &x.ty).ok_or_else(|| {
                    GraphError::UnknownValue {
                        node: name.clone(),
                        id: v.0,
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        let out_types = op.infer(&types).map_err(|source| GraphError::Shape {
            node: name.clone(),
            op: op.name(),
            source,
        })?;
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                let vname = if i == 0 {
                    name.clone()
                } else {
                    format!("{name}:{i}")
                };
                self.add_value(vname, ty)
            })
            .collect();
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
        });
        Ok(outputs)
    }

    /// The value with this id. Panics on an id not from this graph (an internal bug).
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }

    /// The type of a value.
    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.value(id).ty
    }
}
