//! The graph verifier: SSA form, topological order, and every node's types agreeing with its
//! operator's shape rule. Errors name the node.

use super::ops::ShapeError;
use super::{Graph, ValueId};
use std::collections::BTreeSet;

/// A malformed graph.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// A value id that is not in the graph.
    #[error("node `{node}`: value id {id} is not in the graph")]
    UnknownValue {
        /// The node.
        node: String,
        /// The id.
        id: u32,
    },
    /// A value used before any node, input or constant defines it.
    #[error("node `{node}`: input `{value}` is used before it is defined")]
    UseBeforeDef {
        /// The node.
        node: String,
        /// The value.
        value: String,
    },
    /// A value defined twice.
    #[error("value `{value}` is defined more than once (again by `{node}`)")]
    Redefined {
        /// The second definer.
        node: String,
        /// The value.
        value: String,
    },
    /// An operator applied to operand types it does not accept.
    #[error("node `{node}` ({op}): {source}")]
    Shape {
        /// The node.
        node: String,
        /// Its operator.
        op: &'static str,
        /// What does not fit.
        source: ShapeError,
    },
    /// A node's recorded result types differ from what its operator gives.
    #[error(
        "node `{node}` ({op}): result `{value}` is recorded as {recorded} but the operator gives {inferred}"
    )]
    TypeMismatch {
        /// The node.
        node: String,
        /// Its operator.
        op: &'static str,
        /// The result.
        value: String,
        /// Recorded type.
        recorded: String,
        /// Inferred type.
        inferred: String,
    },
    /// A graph output that nothing defines.
    #[error("graph output `{0}` is never defined")]
    UndefinedOutput(String),
    /// A constant whose tensor does not match its value's type.
    #[error("constant `{0}` does not match its declared type")]
    ConstantMismatch(String),
}

/// Checks the graph; returns the first problem.
pub fn verify_graph(graph: &Graph) -> Result<(), GraphError> {
    let n = graph.values.len();
    let name = |id: ValueId| {
        graph
            .values
            .get(id.0 as usize)
            .map_or_else(|| format!("#{}", id.0), |v| v.name.clone())
    };
    let mut defined = BTreeSet::new();
    for &id in graph.inputs.iter().chain(graph.constants.keys()) {
        if id.0 as usize >= n {
            return Err(GraphError::UnknownValue {
                node: "<graph>".into(),
                id: id.0,
            });
        }
        if !defined.insert(id) {
            return Err(GraphError::Redefined {
                node: "<graph>".into(),
                value: name(id),
            });
        }
    }
    for (id, t) in &graph.constants {
        let ty = &graph.values[id.0 as usize].ty;
        if t.dtype != ty.dtype
            || t.shape != ty.shape
            || t.data.len() != t.elems() * t.dtype.size_bytes()
        {
            return Err(GraphError::ConstantMismatch(name(*id)));
        }
    }
    for node in &graph.nodes {
        for &id in node.inputs.iter().chain(&node.outputs) {
            if id.0 as usize >= n {
                return Err(GraphError::UnknownValue {
                    node: node.name.clone(),
                    id: id.0,
                });
            }
        }
        for &id in &node.inputs {
            if !defined.contains(&id) {
                return Err(GraphError::UseBeforeDef {
                    node: node.name.clone(),
                    value: name(id),
                });
            }
        }
        let types: Vec<_> = node
            .inputs
            .iter()
            .map(|&id| &graph.values[id.0 as usize].ty)
            .collect();
        let inferred = node.op.infer(&types).map_err(|source| GraphError::Shape {
            node: node.name.clone(),
            op: node.op.name(),
            source,
        })?;
        if inferred.len() != node.outputs.len() {
            return Err(GraphError::Shape {
                node: node.name.clone(),
                op: node.op.name(),
                source: ShapeError::Mismatch(format!(
                    "gives {} result(s) but the node lists {}",
                    inferred.len(),
                    node.outputs.len()
                )),
            });
        }
        for (&id, ty) in node.outputs.iter().zip(&inferred) {
            let recorded = &graph.values[id.0 as usize].ty;
            if recorded != ty {
                return Err(GraphError::TypeMismatch {
                    node: node.name.clone(),
                    op: node.op.name(),
                    value: name(id),
                    recorded: recorded.to_string(),
                    inferred: ty.to_string(),
                });
            }
            if !defined.insert(id) {
                return Err(GraphError::Redefined {
                    node: node.name.clone(),
                    value: name(id),
                });
            }
        }
    }
    for &id in &graph.outputs {
        if !defined.contains(&id) {
            return Err(GraphError::UndefinedOutput(name(id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::graph::{GraphOp, TensorType, UnaryOp};

    fn small() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
        let y = g
            .add_node("relu", GraphOp::Unary(UnaryOp::Relu), &[x])
            .unwrap()[0];
        g.outputs.push(y);
        g
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        verify_graph(&small()).unwrap();
    }

    #[test]
    fn rejects_out_of_order_and_mistyped_nodes() {
        let mut g = small();
        g.nodes[0].inputs[0] = g.nodes[0].outputs[0];
        assert!(matches!(
            verify_graph(&g),
            Err(GraphError::UseBeforeDef { .. })
        ));

        let mut g = small();
        g.values[1].ty.shape = vec![3, 2];
        let e = verify_graph(&g).unwrap_err();
        assert!(
            e.to_string()
                .contains("recorded as f32[3, 2] but the operator gives f32[2, 3]"),
            "{e}"
        );

        let mut g = small();
        g.nodes[0].op = GraphOp::Transpose { perm: vec![0] };
        assert!(matches!(verify_graph(&g), Err(GraphError::Shape { .. })));

        let mut g = small();
        g.outputs.push(ValueId(99));
        assert!(matches!(
            verify_graph(&g),
            Err(GraphError::UndefinedOutput(_))
        ));
    }
}
