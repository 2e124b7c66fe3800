//! Kernel choice: alternative kernels for one operator, left for extraction to cost against
//! each other.
//!
//! A transpose that is a batch of 2-D transposes can move by DMA access patterns (the
//! `permute` kernel: every element its own DMA run, at the short-run efficiency) or through
//! the tensor engine (`transpose2d`: whole-row loads and stores, a PE transpose and a PSUM copy
//! per 128 x 128 block). Small transposes are cheaper by DMA (fewer instructions), large float
//! ones on the tensor engine.

use super::super::lang::{EG, ops_in};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::ty;
use egg::Id;
use tessera_ir::graph::fused::pe_transpose_split;
use tessera_ir::graph::{FusedOp, GraphOp};

/// The rules of this theme.
pub static RULES: &[Rule] = &[Rule {
    name: "transpose-on-pe",
    theme: Theme::Kernel,
    max_iterations: None,
    search: transpose_on_pe,
}];

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
