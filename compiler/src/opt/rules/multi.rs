//! Multi-pattern rules: several matmuls sharing their input `x` with constant weights (the Q, K
//! and V projections of attention) as one matmul over the concatenated weights, each result a
//! slice of its columns. They run only in the first iteration (as TENSAT bounds its
//! multi-pattern rules): a merged matmul is itself a matmul sharing `x`, and merging again would
//! only add copies.

use super::super::lang::{EG, Op, const_of};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::ty;
use egg::{Id, Language as _};
use tessera_ir::HostTensor;
use tessera_ir::graph::{AxisSlice, FusedOp, GraphOp, MatMulEpilogue, MovementOp};

/// The rules of this theme.
pub static RULES: &[Rule] = &[Rule {
    name: "shared-input-matmuls",
    theme: Theme::Multi,
    max_iterations: Some(1),
    search: shared_input_matmuls,
}];

/// `(class, weight, bias)` of a consumer of `x` computing `x . W (+ b)` with constant 2-D `W`
/// (and constant `[N]` `b`).
type Projection = (Id, Id, Option<Id>);

fn projections(eg: &EG, x: Id) -> (Vec<Projection>, Vec<Projection>) {
    let (mut plain, mut biased) = (Vec::new(), Vec::new());
    for pid in eg[x].parents() {
        let n = eg.id_to_node(pid).clone().map_children(|c| eg.find(c));
        let Op::Node(k) = n.op else { continue };
        if n.children.len() < 2 || n.children[0] != x {
            continue;
        }
        let w = n.children[1];
        if const_of(eg, w).is_none_or(|t| t.shape.len() != 2) {
            continue;
        }
        let class = eg.find(pid);
        match &eg.analysis.tables.ops[k as usize] {
            GraphOp::MatMul => plain.push((class, w, None)),
            GraphOp::Fused(FusedOp::MatMul(m))
                if *m
                    == MatMulEpilogue {
                        bias: true,
                        ..MatMulEpilogue::default()
                    }
                    && n.children
                        .get(2)
                        .is_some_and(|&b| const_of(eg, b).is_some()) =>
            {
                biased.push((class, w, Some(n.children[2])))
            }
            _ => {}
        }
    }
    for v in [&mut plain, &mut biased] {
        v.sort_unstable_by_key(|p| (p.0, p.1));
        v.dedup_by_key(|p| p.0);
    }
    (plain, biased)
}

/// Columns of 2-D row-major constants side by side.
fn concat_columns(parts: &[&HostTensor]) -> HostTensor {
    let rows = parts[0].shape[0];
    let total: usize = parts.iter().map(|p| p.shape[1]).sum();
    let mut v = Vec::with_capacity(rows * total);
    let data: Vec<Vec<f64>> = parts.iter().map(|p| p.to_f64_vec()).collect();
    for r in 0..rows {
        for (p, d) in parts.iter().zip(&data) {
            let n = p.shape[1];
            v.extend_from_slice(&d[r * n..(r + 1) * n]);
        }
    }
    HostTensor::from_f64(parts[0].dtype, &[rows, total], &v)
}

/// `x . W1, x . W2, ...` = slices of `x . [W1 W2 ...]` (likewise with biases).
fn shared_input_matmuls(eg: &EG, x: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(xt) = ty(eg, x) else { return vec![] };
    if xt.shape.len() < 2 || !xt.dtype.is_float() {
        return vec![];
    }
    let (plain, biased) = projections(eg, x);
    let mut out = Vec::new();
    for group in [plain, biased] {
        let ws: Vec<&HostTensor> = group.iter().filter_map(|p| const_of(eg, p.1)).collect();
        if group.len() < 2 || ws.iter().any(|w| w.shape[0] != ws[0].shape[0]) {
            continue;
        }
        let w = Rhs::Const(concat_columns(&ws));
        let merged = match group[0].2 {
            None => Rhs::Op(GraphOp::MatMul, vec![Rhs::Class(x), w]),
            Some(_) => {
                let bs: Vec<HostTensor> = group
                    .iter()
                    .filter_map(|p| p.2.and_then(|b| const_of(eg, b)))
                    .map(|b| HostTensor {
                        shape: vec![1, b.elems()],
                        ..b.clone()
                    })
                    .collect();
                if bs.len() != group.len() {
                    continue;
                }
                let refs: Vec<&HostTensor> = bs.iter().collect();
                let mut b = concat_columns(&refs);
                b.shape = vec![b.elems()];
                Rhs::Op(
                    GraphOp::Fused(FusedOp::MatMul(MatMulEpilogue {
                        bias: true,
                        ..MatMulEpilogue::default()
                    })),
                    vec![Rhs::Class(x), w, Rhs::Const(b)],
                )
            }
        };
        let rank = xt.shape.len();
        let mut start = 0;
        for (p, wt) in group.iter().zip(&ws) {
            let n = wt.shape[1];
            let Some(pt) = ty(eg, p.0) else { continue };
            let mut axes: Vec<AxisSlice> = pt
                .shape
                .iter()
                .map(|&d| AxisSlice {
                    start: 0,
                    step: 1,
                    len: d,
                })
                .collect();
            axes[rank - 1] = AxisSlice {
                start,
                step: 1,
                len: n,
            };
            start += n;
            out.push((
                p.0,
                Rhs::Op(
                    GraphOp::Movement(MovementOp::Slice(axes)),
                    vec![merged.clone()],
                ),
            ));
        }
    }
    out
}
