//! `--auto-cast all`: every fp32 value inside the graph becomes bf16 (the engines still compute
//! in fp32 and matmuls accumulate in fp32 PSUM; only what is stored between ops is narrowed).
//! Graph inputs and outputs keep their types: inputs are cast on entry and outputs cast back,
//! so the model's signature does not change.

use std::collections::BTreeMap;
use tessera_ir::graph::{Graph, GraphError, GraphOp, ValueId};
use tessera_ir::{DType, HostTensor};

/// The graph with fp32 narrowed to bf16 between ops.
pub fn cast_all_to_bf16(g: &Graph) -> Result<Graph, GraphError> {
    let mut out = Graph::new(g.name.clone());
    let mut map: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    for &id in &g.inputs {
        let v = g.value(id);
        let new = out.add_input(v.name.clone(), v.ty.clone());
        let mapped = if v.ty.dtype == DType::F32 {
            out.add_node(
                format!("{}.to_bf16", v.name),
                GraphOp::Cast { to: DType::Bf16 },
                &[new],
            )?[0]
        } else {
            new
        };
        map.insert(id, mapped);
    }
    for (&id, t) in &g.constants {
        let v = g.value(id);
        let t = if t.dtype == DType::F32 {
            HostTensor::from_f64(DType::Bf16, &t.shape, &t.to_f64_vec())
        } else {
            t.clone()
        };
        map.insert(id, out.add_constant(v.name.clone(), t));
    }
    for node in &g.nodes {
        let ins: Vec<ValueId> = node.inputs.iter().map(|i| map[i]).collect();
        let op = match &node.op {
            GraphOp::Cast { to: DType::F32 } => GraphOp::Cast { to: DType::Bf16 },
            other => other.clone(),
        };
        let outs = out.add_node(node.name.clone(), op, &ins)?;
        for (old, new) in node.outputs.iter().zip(&outs) {
            out.values[new.0 as usize].name = g.value(*old).name.clone();
            map.insert(*old, *new);
        }
    }
    for &id in &g.outputs {
        let v = g.value(id);
        let cur = map[&id];
        let produced = out.ty(cur).dtype;
        let final_id = if produced != v.ty.dtype {
            // Give the cast the output's name, and the narrowed value an internal one.
            out.values[cur.0 as usize].name = format!("{}.bf16", v.name);
            let c = out.add_node(
                format!("{}.to_f32", v.name),
                GraphOp::Cast { to: v.ty.dtype },
                &[cur],
            )?[0];
            out.values[c.0 as usize].name = v.name.clone();
            c
        } else {
            cur
        };
        out.outputs.push(final_id);
    }
    tessera_ir::graph::verify_graph(&out)?;
    Ok(out)
}
