//! Algebra and cleanup: identities, transpose and reshape chains, broadcast simplification.
//! (Constant folding is the analysis's: a class whose operands are all constants and whose
//! result is small gets a constant leaf.)

use super::super::lang::{EG, ops_in, splat_of};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::{binary, is_splat, ty};
use egg::Id;
use tessera_ir::HostTensor;
use tessera_ir::graph::{BinaryOp, GraphOp};

/// The rules of this theme.
pub static RULES: &[Rule] = &[
    Rule {
        name: "identity-elim",
        theme: Theme::Algebra,
        max_iterations: None,
        search: identity_elim,
    },
    Rule {
        name: "reshape-noop",
        theme: Theme::Algebra,
        max_iterations: None,
        search: reshape_noop,
    },
    Rule {
        name: "reshape-chain",
        theme: Theme::Algebra,
        max_iterations: None,
        search: reshape_chain,
    },
    Rule {
        name: "transpose-chain",
        theme: Theme::Algebra,
        max_iterations: None,
        search: transpose_chain,
    },
    Rule {
        name: "neutral-operand",
        theme: Theme::Algebra,
        max_iterations: None,
        search: neutral_operand,
    },
    Rule {
        name: "splat-to-scalar",
        theme: Theme::Algebra,
        max_iterations: None,
        search: splat_to_scalar,
    },
];

/// `Identity(x) = x`.
fn identity_elim(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    ops_in(eg, id)
        .filter(|(op, _)| matches!(op, GraphOp::Identity))
        .map(|(_, ch)| (id, Rhs::Class(ch[0])))
        .collect()
}

/// `Reshape(x) = x` when the shape does not change; also a transpose by the identity
/// permutation.
fn reshape_noop(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    ops_in(eg, id)
        .filter(|(op, ch)| match op {
            GraphOp::Reshape { .. } => ty(eg, ch[0]) == Some(t),
            GraphOp::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
            _ => false,
        })
        .map(|(_, ch)| (id, Rhs::Class(ch[0])))
        .collect()
}

/// `Reshape(s2, Reshape(s1, x)) = Reshape(s2, x)`: only the last shape matters.
fn reshape_chain(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        if let GraphOp::Reshape { .. } = op {
            for (inner, ich) in ops_in(eg, ch[0]) {
                if let GraphOp::Reshape { .. } = inner {
                    out.push((id, Rhs::op(op.clone(), &[ich[0]])));
                }
            }
        }
    }
    out
}

/// `Transpose(p2, Transpose(p1, x)) = Transpose(p1 . p2, x)`: result axis i is axis
/// `p1[p2[i]]` of x.
fn transpose_chain(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        if let GraphOp::Transpose { perm: p2 } = op {
            for (inner, ich) in ops_in(eg, ch[0]) {
                if let GraphOp::Transpose { perm: p1 } = inner {
                    let perm: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
                    out.push((id, Rhs::op(GraphOp::Transpose { perm }, &[ich[0]])));
                }
            }
        }
    }
    out
}

/// `x + 0 = x`, `x - 0 = x`, `x * 1 = x`, `x / 1 = x`, when the constant does not broadcast x
/// to a larger shape.
fn neutral_operand(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    let mut out = Vec::new();
    for (op, neutral) in [
        (BinaryOp::Add, 0.0),
        (BinaryOp::Sub, 0.0),
        (BinaryOp::Mul, 1.0),
        (BinaryOp::Div, 1.0),
    ] {
        for (x, c) in binary(eg, id, op) {
            if ty(eg, x) == Some(t) && is_splat(eg, c, neutral) && splat_of(eg, c) == Some(neutral)
            {
                out.push((id, Rhs::Class(x)));
            }
        }
    }
    out
}

/// `x OP c = x OP scalar(c)` for a splat constant `c` of some broadcast shape that does not
/// enlarge x: element-wise kernels then take it as an immediate instead of a tensor to load.
fn splat_to_scalar(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    let mut out = Vec::new();
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        for (o, ch) in ops_in(eg, id) {
            if *o != GraphOp::Binary(op) {
                continue;
            }
            let (x, c) = (ch[0], ch[1]);
            let (Some(ct), Some(v)) = (ty(eg, c), splat_of(eg, c)) else {
                continue;
            };
            if ct.shape.is_empty() || ty(eg, x) != Some(t) || !t.dtype.is_float() {
                continue;
            }
            let scalar = HostTensor::from_f64(ct.dtype, &[], &[v]);
            out.push((
                id,
                Rhs::Op(GraphOp::Binary(op), vec![Rhs::Class(x), Rhs::Const(scalar)]),
            ));
        }
    }
    out
}
