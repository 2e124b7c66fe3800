//! Fusion: kernels that keep intermediates on chip.
//!
//! - Element-wise regions: the largest tree of float element-wise operators of one shape below
//!   a class becomes one program (inputs loaded once, one store). This rule is solved directly,
//!   one region per class, instead of by pairwise merging, which would add every sub-region.
//! - Matmul and convolution epilogues: bias, activation and residual applied while the result
//!   leaves PSUM.
//! - Attention: `softmax(scale * Q K^T + mask) V` as one flash-attention kernel.

use super::super::lang::{EG, ops_in, splat_of};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::{activations, binary, ty};
use egg::Id;
use std::collections::HashMap;
use tessera_ir::graph::{
    Activation, AttentionSpec, BinaryOp, ConvEpilogue, ElementwiseOp, EwArg, EwInst, EwProgram,
    FusedOp, GraphOp, MatMulEpilogue, TensorType, UnaryOp,
};

/// The rules of this theme.
pub static RULES: &[Rule] = &[
    Rule {
        name: "elementwise-region",
        theme: Theme::Fusion,
        max_iterations: None,
        search: elementwise_region,
    },
    Rule {
        name: "matmul-bias",
        theme: Theme::Fusion,
        max_iterations: None,
        search: matmul_bias,
    },
    Rule {
        name: "matmul-activation",
        theme: Theme::Fusion,
        max_iterations: None,
        search: matmul_activation,
    },
    Rule {
        name: "matmul-residual",
        theme: Theme::Fusion,
        max_iterations: None,
        search: matmul_residual,
    },
    Rule {
        name: "conv-activation",
        theme: Theme::Fusion,
        max_iterations: None,
        search: conv_activation,
    },
    Rule {
        name: "conv-residual",
        theme: Theme::Fusion,
        max_iterations: None,
        search: conv_residual,
    },
    Rule {
        name: "conv-residual-activation",
        theme: Theme::Fusion,
        max_iterations: None,
        search: conv_residual_activation,
    },
    Rule {
        name: "flash-attention",
        theme: Theme::Fusion,
        max_iterations: None,
        search: flash_attention,
    },
];

/// Most steps in one fused element-wise program.
const MAX_STEPS: usize = 24;
/// Most inputs of one fused element-wise program.
const MAX_INPUTS: usize = 6;

/// The element-wise e-node a region walks through in a class: activations first (a recognised
/// GELU rather than its written-out product), then unary, then binary operators.
fn ew_node(eg: &EG, id: Id) -> Option<(EwStep, Vec<Id>)> {
    let t = ty(eg, id)?;
    if !t.dtype.is_float() {
        return None;
    }
    let mut best: Option<(u8, EwStep, Vec<Id>)> = None;
    for (op, ch) in ops_in(eg, id) {
        if ch
            .iter()
            .any(|&c| c == id || ty(eg, c).is_none_or(|ct| ct.dtype != t.dtype))
        {
            continue;
        }
        let (rank, step) = match op {
            GraphOp::Elementwise(ElementwiseOp::Gelu { tanh }) => (
                0,
                EwStep::Act(if *tanh {
                    Activation::GeluTanh
                } else {
                    Activation::Gelu
                }),
            ),
            GraphOp::Unary(u) => (1, EwStep::Unary(*u)),
            GraphOp::Binary(b) if *b != BinaryOp::Pow || splat_of(eg, ch[1]).is_some() => {
                (2, EwStep::Binary(*b))
            }
            _ => continue,
        };
        if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
            best = Some((rank, step, ch.to_vec()));
        }
    }
    best.map(|(_, s, ch)| (s, ch))
}

#[derive(Clone, Copy)]
enum EwStep {
    Act(Activation),
    Unary(UnaryOp),
    Binary(BinaryOp),
}

struct Region<'a> {
    eg: &'a EG,
    shape: &'a TensorType,
    inputs: Vec<Id>,
    steps: Vec<EwInst>,
    memo: HashMap<Id, EwArg>,
    /// Classes being inlined (an e-graph may hold cycles, e.g. `x = x * 1`).
    open: Vec<Id>,
}

impl Region<'_> {
    fn input(&mut self, c: Id) -> Option<EwArg> {
        let k = match self.inputs.iter().position(|&i| i == c) {
            Some(k) => k,
            None => {
                if self.inputs.len() >= MAX_INPUTS {
                    return None;
                }
                self.inputs.push(c);
                self.inputs.len() - 1
            }
        };
        Some(EwArg::In(k))
    }

    /// The operand for class `c`; `scalar_ok` when an immediate may stand for a splat.
    fn arg(&mut self, c: Id, scalar_ok: bool) -> Option<EwArg> {
        if let Some(&a) = self.memo.get(&c) {
            return Some(a);
        }
        if let Some(v) = splat_of(self.eg, c)
            && scalar_ok
        {
            return Some(EwArg::Scalar(v));
        }
        if self.eg[c].data.konst.is_none()
            && ty(self.eg, c) == Some(self.shape)
            && self.steps.len() < MAX_STEPS
            && let Some(a) = self.inline(c)
        {
            return Some(a);
        }
        self.input(c)
    }

    fn inline(&mut self, c: Id) -> Option<EwArg> {
        if self.open.contains(&c) {
            return None;
        }
        let (step, ch) = ew_node(self.eg, c)?;
        self.open.push(c);
        let inst = self.step(step, &ch);
        self.open.pop();
        self.steps.push(inst?);
        let a = EwArg::Step(self.steps.len() - 1);
        self.memo.insert(c, a);
        Some(a)
    }

    fn step(&mut self, step: EwStep, ch: &[Id]) -> Option<EwInst> {
        Some(match step {
            EwStep::Act(a) => EwInst::Act(a, self.arg(ch[0], false)?),
            EwStep::Unary(u) => EwInst::Unary(u, self.arg(ch[0], false)?),
            EwStep::Binary(b) => {
                let commutes = matches!(
                    b,
                    BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
                );
                let x = self.arg(ch[0], commutes)?;
                let y = self.arg(ch[1], !matches!(x, EwArg::Scalar(_)))?;
                EwInst::Binary(b, x, y)
            }
        })
    }
}

/// The largest element-wise region below the class as one program.
fn elementwise_region(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    if eg[id].data.konst.is_some() || ew_node(eg, id).is_none() {
        return vec![];
    }
    let mut r = Region {
        eg,
        shape: t,
        inputs: Vec::new(),
        steps: Vec::new(),
        memo: HashMap::new(),
        open: Vec::new(),
    };
    if r.inline(id).is_none() || r.steps.len() < 2 {
        return vec![];
    }
    let op = GraphOp::Fused(FusedOp::Elementwise(EwProgram { steps: r.steps }));
    vec![(id, Rhs::op(op, &r.inputs))]
}

/// Matmul e-nodes in the class that an epilogue can extend: `(spec, operands)`; a plain
/// `MatMul` of operands at least 2-D counts as an empty epilogue.
fn matmuls(eg: &EG, id: Id) -> Vec<(MatMulEpilogue, Vec<Id>)> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        match op {
            GraphOp::MatMul
                if ch
                    .iter()
                    .all(|&c| ty(eg, c).is_some_and(|t| t.shape.len() >= 2)) =>
            {
                out.push((MatMulEpilogue::default(), ch.to_vec()));
            }
            GraphOp::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } if ch.len() == 2 || *beta == 0.0 => out.push((
                MatMulEpilogue {
                    trans_a: *trans_a,
                    trans_b: *trans_b,
                    alpha: *alpha,
                    ..MatMulEpilogue::default()
                },
                ch[..2].to_vec(),
            )),
            GraphOp::Fused(FusedOp::MatMul(m)) => out.push((m.clone(), ch.to_vec())),
            _ => {}
        }
    }
    out
}

fn fused_matmul(m: MatMulEpilogue, operands: Vec<Rhs>) -> Rhs {
    Rhs::Op(GraphOp::Fused(FusedOp::MatMul(m)), operands)
}

/// A bias broadcasting along the last axis only, as `[N]`.
fn as_row(eg: &EG, b: Id, n: usize) -> Option<Rhs> {
    let t = ty(eg, b)?;
    if t.elems() != n || t.shape.last() != Some(&n) {
        return None;
    }
    Some(if t.shape == [n] {
        Rhs::Class(b)
    } else {
        Rhs::op(GraphOp::Reshape { shape: vec![n] }, &[b])
    })
}

/// `MatMul(a, b) + bias` (and Gemm with a `[N]`-like C) = fused matmul with a bias.
fn matmul_bias(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    let Some(&n) = t.shape.last() else {
        return vec![];
    };
    let mut out = Vec::new();
    for (mm, b) in binary(eg, id, BinaryOp::Add) {
        if ty(eg, mm) != Some(t) {
            continue;
        }
        let Some(row) = as_row(eg, b, n) else {
            continue;
        };
        for (m, ch) in matmuls(eg, mm) {
            if m.bias || m.act.is_some() || m.residual {
                continue;
            }
            let spec = MatMulEpilogue { bias: true, ..m };
            out.push((
                id,
                fused_matmul(
                    spec,
                    vec![Rhs::Class(ch[0]), Rhs::Class(ch[1]), row.clone()],
                ),
            ));
        }
    }
    for (op, ch) in ops_in(eg, id) {
        if let GraphOp::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } = op
            && ch.len() == 3
            && *beta == 1.0
            && let Some(row) = as_row(eg, ch[2], n)
        {
            let spec = MatMulEpilogue {
                trans_a: *trans_a,
                trans_b: *trans_b,
                alpha: *alpha,
                bias: true,
                ..MatMulEpilogue::default()
            };
            out.push((
                id,
                fused_matmul(spec, vec![Rhs::Class(ch[0]), Rhs::Class(ch[1]), row]),
            ));
        }
    }
    out
}

/// `act(matmul ...)` = the matmul with the activation in its epilogue.
fn matmul_activation(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (act, x) in activations(eg, id) {
        for (m, ch) in matmuls(eg, x) {
            if m.act.is_some() || m.residual {
                continue;
            }
            let spec = MatMulEpilogue {
                act: Some(act),
                ..m
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::MatMul(spec)), &ch)));
        }
    }
    out
}

/// `matmul ... + r` for an `r` of the result's shape = the matmul with a residual.
fn matmul_residual(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    let mut out = Vec::new();
    for (x, r) in binary(eg, id, BinaryOp::Add) {
        if ty(eg, x) != Some(t) || ty(eg, r) != Some(t) || x == r {
            continue;
        }
        for (m, mut ch) in matmuls(eg, x) {
            if m.residual {
                continue;
            }
            ch.push(r);
            let spec = MatMulEpilogue {
                residual: true,
                ..m
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::MatMul(spec)), &ch)));
        }
    }
    out
}

/// Convolutions in the class an epilogue can extend.
fn convs(eg: &EG, id: Id) -> Vec<(ConvEpilogue, Vec<Id>)> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        match op {
            GraphOp::Conv(c) if !c.transpose => out.push((
                ConvEpilogue {
                    conv: c.clone(),
                    bias: ch.len() == 3,
                    act: None,
                    residual: false,
                    post_act: None,
                },
                ch.to_vec(),
            )),
            GraphOp::Fused(FusedOp::Conv(c)) => out.push((c.clone(), ch.to_vec())),
            _ => {}
        }
    }
    out
}

/// `act(conv ...)` = the convolution with the activation in its epilogue.
fn conv_activation(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (act, x) in activations(eg, id) {
        for (c, ch) in convs(eg, x) {
            if c.act.is_some() || c.residual {
                continue;
            }
            let spec = ConvEpilogue {
                act: Some(act),
                ..c
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::Conv(spec)), &ch)));
        }
    }
    out
}

/// `conv ... + r` for an `r` of the result's shape = the convolution with a residual.
fn conv_residual(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    let mut out = Vec::new();
    for (x, r) in binary(eg, id, BinaryOp::Add) {
        if ty(eg, x) != Some(t) || ty(eg, r) != Some(t) || x == r {
            continue;
        }
        for (c, mut ch) in convs(eg, x) {
            if c.residual {
                continue;
            }
            ch.push(r);
            let spec = ConvEpilogue {
                residual: true,
                ..c
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::Conv(spec)), &ch)));
        }
    }
    out
}

/// `act(conv ... + r)` = the convolution with the activation after its residual (the end of
/// a ResNet block), so the sum never makes a round trip through HBM for the activation alone.
fn conv_residual_activation(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (act, x) in activations(eg, id) {
        for (c, ch) in convs(eg, x) {
            if !c.residual || c.post_act.is_some() {
                continue;
            }
            let spec = ConvEpilogue {
                post_act: Some(act),
                ..c
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::Conv(spec)), &ch)));
        }
    }
    out
}

/// `softmax(scale * Q K^T + mask) V` (scale by `*` or `/` a splat, mask optional, K^T any
/// class of shape `[..., D, T]`) = flash attention over Q, K (the transpose of K^T) and V.
fn flash_attention(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let mut out = Vec::new();
    for (op, ch) in ops_in(eg, id) {
        if *op != GraphOp::MatMul {
            continue;
        }
        let (p, v) = (ch[0], ch[1]);
        let Some(pt) = ty(eg, p) else { continue };
        let r = pt.shape.len();
        if r < 3 {
            continue;
        }
        let scores: Vec<Id> = ops_in(eg, p)
            .filter(|(o, _)| **o == GraphOp::Softmax { axis: r - 1 })
            .map(|(_, c)| c[0])
            .collect();
        for s in scores {
            // (scaled scores, mask)
            let mut masked: Vec<(Id, Option<Id>)> = vec![(s, None)];
            for (a, m) in binary(eg, s, BinaryOp::Add) {
                if ty(eg, a) == ty(eg, s) {
                    masked.push((a, Some(m)));
                }
            }
            for (scaled, mask) in masked {
                // (raw scores, scale)
                let mut raws: Vec<(Id, f64)> = vec![(scaled, 1.0)];
                for (x, c) in binary(eg, scaled, BinaryOp::Mul) {
                    if let Some(k) = splat_of(eg, c) {
                        raws.push((x, k));
                    }
                }
                for (x, c) in binary(eg, scaled, BinaryOp::Div) {
                    if let Some(k) = splat_of(eg, c) {
                        raws.push((x, 1.0 / k));
                    }
                }
                for (raw, scale) in raws {
                    for (o, qk) in ops_in(eg, raw) {
                        if *o != GraphOp::MatMul {
                            continue;
                        }
                        let (q, kt) = (qk[0], qk[1]);
                        let (Some(qt), Some(ktt), Some(vt)) = (ty(eg, q), ty(eg, kt), ty(eg, v))
                        else {
                            continue;
                        };
                        if qt.shape.len() != r || ktt.shape.len() != r || vt.shape.len() != r {
                            continue;
                        }
                        if qt.shape[..r - 2] != ktt.shape[..r - 2]
                            || vt.shape[..r - 2] != qt.shape[..r - 2]
                        {
                            continue;
                        }
                        let mut perm: Vec<usize> = (0..r).collect();
                        perm.swap(r - 1, r - 2);
                        let k = Rhs::op(GraphOp::Transpose { perm }, &[kt]);
                        let mut operands = vec![Rhs::Class(q), k, Rhs::Class(v)];
                        if let Some(m) = mask {
                            operands.push(Rhs::Class(m));
                        }
                        let spec = AttentionSpec {
                            scale,
                            mask: mask.is_some(),
                            causal: false,
                        };
                        out.push((
                            id,
                            Rhs::Op(GraphOp::Fused(FusedOp::Attention(spec)), operands),
                        ));
                    }
                }
            }
        }
    }
    out
}
