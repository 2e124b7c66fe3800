//! A readable text form of a graph, for `tessera inspect --emit graph` and test snapshots.
//!
//! ```text
//! graph mlp(%x: f32[53, 200]) -> (%y: f32[53, 9]) {
//!   const %w1: f32[200, 77]
//!   %h = Gemm(%x, %w1, %b1) {alpha=1, beta=1, trans_a=false, trans_b=false}  # node gemm0
//!   ...
//! }
//! ```

use super::{Graph, GraphOp, ValueId};
use std::fmt::Write;

/// Prints `graph` in the text form above.
pub fn print_graph(graph: &Graph) -> String {
    let mut out = String::new();
    let v = |id: ValueId| {
        graph
            .values
            .get(id.0 as usize)
            .map_or_else(|| format!("%#{}", id.0), |v| format!("%{}", v.name))
    };
    let typed = |id: ValueId| {
        graph.values.get(id.0 as usize).map_or_else(
            || format!("%#{}", id.0),
            |x| format!("%{}: {}", x.name, x.ty),
        )
    };
    let ins: Vec<String> = graph.inputs.iter().map(|&i| typed(i)).collect();
    let outs: Vec<String> = graph.outputs.iter().map(|&i| typed(i)).collect();
    let _ = writeln!(
        out,
        "graph {}({}) -> ({}) {{",
        graph.name,
        ins.join(", "),
        outs.join(", ")
    );
    for &id in graph.constants.keys() {
        let _ = writeln!(out, "  const {}", typed(id));
    }
    for node in &graph.nodes {
        let results: Vec<String> = node.outputs.iter().map(|&i| typed(i)).collect();
        let args: Vec<String> = node.inputs.iter().map(|&i| v(i)).collect();
        let attrs = attributes(&node.op);
        let _ = writeln!(
            out,
            "  {} = {}({}){}  # node {}",
            results.join(", "),
            node.op.name(),
            args.join(", "),
            if attrs.is_empty() {
                String::new()
            } else {
                format!(" {{{attrs}}}")
            },
            node.name
        );
    }
    out.push_str("}\n");
    out
}

fn attributes(op: &GraphOp) -> String {
    match op {
        GraphOp::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            format!("alpha={alpha}, beta={beta}, trans_a={trans_a}, trans_b={trans_b}")
        }
        GraphOp::Softmax { axis } | GraphOp::Gather { axis } | GraphOp::Concat { axis } => {
            format!("axis={axis}")
        }
        GraphOp::Reshape { shape } => format!("shape={shape:?}"),
        GraphOp::Transpose { perm } => format!("perm={perm:?}"),
        GraphOp::Cast { to } => format!("to={to}"),
        GraphOp::Elementwise(e) => e.attrs(),
        GraphOp::Reduce(r) => r.attributes(),
        GraphOp::Movement(m) => m.attributes(),
        GraphOp::Conv(c) => c.attributes(),
        GraphOp::Pool(p) => p.attributes(),
        GraphOp::Index(op) => op.attributes(),
        GraphOp::Scan(s) => s.attributes(),
        GraphOp::Fused(f) => f.to_string(),
        GraphOp::Custom(c) => c.attributes(),
        GraphOp::MatMul | GraphOp::Binary(_) | GraphOp::Unary(_) | GraphOp::Identity => {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::graph::{TensorType, UnaryOp};

    #[test]
    fn prints_signature_constants_and_nodes() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
        let t = g
            .add_node("t0", GraphOp::Transpose { perm: vec![1, 0] }, &[x])
            .unwrap()[0];
        let y = g
            .add_node("r0", GraphOp::Unary(UnaryOp::Relu), &[t])
            .unwrap()[0];
        g.outputs.push(y);
        let text = print_graph(&g);
        assert_eq!(
            text,
            "graph g(%x: f32[2, 3]) -> (%r0: f32[3, 2]) {\n  \
             %t0: f32[3, 2] = Transpose(%x) {perm=[1, 0]}  # node t0\n  \
             %r0: f32[3, 2] = Relu(%t0)  # node r0\n}\n"
        );
    }
}
