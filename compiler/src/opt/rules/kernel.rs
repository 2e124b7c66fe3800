//! Kernel choice: alternative kernels for one operator, left for extraction to cost against
//! each other.
//!
//! A transpose that is a batch of 2-D transposes can move by DMA access patterns (the
//! `permute` kernel: every element its own DMA run, at the short-run efficiency) or through
//! the tensor engine (`transpose2d`: whole-row loads and stores, a PE transpose and a PSUM copy
//! per 128 x 128 block). Small transposes are cheaper by DMA (fewer instructions), large float
//! ones on the tensor engine.
//!
//! A matmul can hold either operand stationary. The kernel's usual configuration keeps
//! `A^T` stationary (M on the array's columns) and streams B (N as moving columns); with the
//! roles swapped it computes `C^T` with `B^T` stationary. Every matmul instruction costs
//! `max(moving columns, 64)` cycles whatever the stationary width, so a small M (a batch-1
//! classifier head, a decoder step) wastes most of the array unless the roles are swapped; the
//! price is a transposing store of the result.

use super::super::lang::{EG, ops_in};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::ty;
use egg::Id;
use tessera_ir::graph::fused::pe_transpose_split;
use tessera_ir::graph::{FusedOp, GraphOp, MatMulEpilogue};
use tessera_kernels::library;

/// The rules of this theme.
pub static RULES: &[Rule] = &[
    Rule {
        name: "transpose-on-pe",
        theme: Theme::Kernel,
        max_iterations: None,
        search: transpose_on_pe,
    },
    Rule {
        name: "matmul-swap-roles",
        theme: Theme::Kernel,
        max_iterations: None,
        search: matmul_swap_roles,
    },
];

/// `Transpose(perm, x)` = the same transpose on the tensor engine, for float `x` and a `perm`
/// that is a batch of 2-D transposes.
fn transpose_on_pe(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    if !t.dtype.is_float() {
        return vec![];
    }
    ops_in(eg, id)
        .filter_map(|(op, ch)| match op {
            GraphOp::Transpose { perm } if pe_transpose_split(perm).is_some() => Some((
                id,
                Rhs::op(
                    GraphOp::Fused(FusedOp::PeTranspose { perm: perm.clone() }),
                    &[ch[0]],
                ),
            )),
            _ => None,
        })
        .collect()
}

/// Largest M for which the swapped roles are offered: at most a quarter of the array's 128
/// columns used by the usual configuration. Above it the usual configuration is rarely
/// tensor-engine bound, and the swapped one's extra DMAs (a store and a bias column per
/// 128 columns of N) are not in the kernel estimate, so offering it would only risk a
/// misranking (BERT's 64-row feed-forward matmul was one).
const SWAP_MAX_M: usize = 32;

/// `MatMul(a, b)` or a fused matmul = the same fused matmul with the operands' roles swapped
/// (float operands of rank 2 or more; the meaning is unchanged, only the kernel's schedule),
/// offered when M is small (at most [`SWAP_MAX_M`]), N larger than M, and `B^T` fills full
/// stripes as the stationary operand: narrower stripes multiply small DMAs whose fixed cost
/// the estimate does not count (AlexNet's 9216-wide layers ran 1.5x slower swapped on the
/// timing model).
fn matmul_swap_roles(eg: &EG, id: Id, ctx: &Ctx) -> Vec<Proposal> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| {
            let spec = match op {
                GraphOp::MatMul => MatMulEpilogue {
                    swap_roles: true,
                    ..MatMulEpilogue::default()
                },
                GraphOp::Fused(FusedOp::MatMul(m)) if !m.swap_roles => MatMulEpilogue {
                    swap_roles: true,
                    ..m.clone()
                },
                _ => return None,
            };
            let operands_ok = ch[..2]
                .iter()
                .all(|&c| ty(eg, c).is_some_and(|t| t.shape.len() >= 2 && t.dtype.is_float()));
            if !operands_ok {
                return None;
            }
            let (out, b) = (ty(eg, id)?, ty(eg, ch[1])?);
            let (r, rb) = (out.shape.len(), b.shape.len());
            if r < 2 {
                return None;
            }
            let (m, n) = (out.shape[r - 2], out.shape[r - 1]);
            let k = b.shape[rb - if spec.trans_b { 1 } else { 2 }];
            let full = library::matmul_full_stripes(ctx.target, n, k, out.dtype);
            (m <= SWAP_MAX_M && n > m && full)
                .then(|| (id, Rhs::op(GraphOp::Fused(FusedOp::MatMul(spec)), ch)))
        })
        .collect()
}
