//! Layout: transposes folded into the operand roles of a matmul. The matmul kernel loads a
//! transposed operand through a transposing DMA view, so `MatMul(Transpose(a), b)` needs no
//! separate transpose kernel (nor the HBM round trip of its result).

use super::super::lang::{EG, ops_in};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::ty;
use egg::Id;
use tessera_ir::graph::{FusedOp, GraphOp, MatMulEpilogue};

/// The rules of this theme.
pub static RULES: &[Rule] = &[Rule {
    name: "transpose-into-matmul",
    theme: Theme::Layout,
    max_iterations: None,
    search: transpose_into_matmul,
}];

/// The class is a transpose swapping the last two axes of some `x` (at least 2-D): the `x`s.
fn swapped(eg: &EG, id: Id) -> Vec<Id> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| match op {
            GraphOp::Transpose { perm } => {
                let r = perm.len();
                let swaps = r >= 2
                    && perm[r - 1] == r - 2
                    && perm[r - 2] == r - 1
                    && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p);
                swaps.then_some(ch[0])
            }
            _ => None,
        })
        .collect()
}

/// `MatMul(Transpose(a), b)` = a matmul reading `a` transposed (likewise `b`), for plain and
/// fused matmuls.
fn transpose_into_matmul(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        let spec = match op {
            GraphOp::MatMul
                if ch
                    .iter()
                    .all(|&c| ty(eg, c).is_some_and(|t| t.shape.len() >= 2)) =>
            {
                MatMulEpilogue {
                    trans_a: false,
                    trans_b: false,
                    alpha: 1.0,
                    bias: false,
                    act: None,
                    residual: false,
                    swap_roles: false,
                }
            }
            GraphOp::Fused(FusedOp::MatMul(m)) => m.clone(),
            _ => continue,
        };
        for side in 0..2 {
            for x in swapped(eg, ch[side]) {
                let mut s = spec.clone();
                let mut operands = ch.to_vec();
                operands[side] = x;
                if side == 0 {
                    s.trans_a = !s.trans_a;
                } else {
                    s.trans_b = !s.trans_b;
                }
                out.push((id, Rhs::op(GraphOp::Fused(FusedOp::MatMul(s)), &operands)));
            }
        }
    }
    out
}
