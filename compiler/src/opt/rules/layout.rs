//! Layout: transposes folded into the operand roles of a matmul. The matmul kernel loads a
//! transposed operand through a transposing DMA view, so `MatMul(Transpose(a), b)` needs no
//! separate transpose kernel (nor the HBM round trip of its result).
//!
//! The other way round for constant weights: a weight stored `[N, K]` (`Gemm`'s `transB`, the
//! usual layout of fully connected layers) reaches the tensor engine through a transposing
//! view whose every element is its own DMA run; stored `[K, N]`, transposed once at compile
//! time, its rows load whole.

use super::super::lang::{EG, const_of, ops_in};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::ty;
use egg::Id;
use tessera_ir::HostTensor;
use tessera_ir::graph::{FusedOp, GraphOp, MatMulEpilogue};

/// The rules of this theme.
pub static RULES: &[Rule] = &[
    Rule {
        name: "transpose-into-matmul",
        theme: Theme::Layout,
        max_iterations: None,
        search: transpose_into_matmul,
    },
    Rule {
        name: "pretranspose-weight",
        theme: Theme::Layout,
        max_iterations: None,
        search: pretranspose_weight,
    },
];

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
                MatMulEpilogue::default()
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

/// A fused matmul reading a constant 2-D `b` transposed = the same matmul reading the
/// transposed constant straight.
fn pretranspose_weight(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| match op {
            GraphOp::Fused(FusedOp::MatMul(m)) if m.trans_b => {
                let w = const_of(eg, ch[1]).filter(|t| t.shape.len() == 2)?;
                let mut operands: Vec<Rhs> = ch.iter().map(|&c| Rhs::Class(c)).collect();
                operands[1] = Rhs::Const(transpose_2d(w));
                let spec = MatMulEpilogue {
                    trans_b: false,
                    ..m.clone()
                };
                Some((id, Rhs::Op(GraphOp::Fused(FusedOp::MatMul(spec)), operands)))
            }
            _ => None,
        })
        .collect()
}

/// `t^T` for a 2-D `t`, element bytes moved as they are.
fn transpose_2d(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let size = t.dtype.size_bytes();
    let mut data = vec![0u8; t.data.len()];
    for r in 0..rows {
        for c in 0..cols {
            let (src, dst) = ((r * cols + c) * size, (c * rows + r) * size);
            data[dst..dst + size].copy_from_slice(&t.data[src..src + size]);
        }
    }
    HostTensor {
        dtype: t.dtype,
        shape: vec![cols, rows],
        data,
    }
}
