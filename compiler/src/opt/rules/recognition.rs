//! Recognition: compositions models write out op by op, named as the one operator (or fused
//! kernel) they are. Commuted operands, either order of a product's factors and constants of
//! any broadcast shape are matched.

use super::super::lang::{EG, const_of, ops_in, splat_of};
use super::super::rewrite::{Ctx, Proposal, Rhs, Rule, Theme};
use super::{binary, close, factors, is_splat, scaled_by, ty, unary};
use egg::Id;
use tessera_ir::HostTensor;
use tessera_ir::graph::{
    Activation, BinaryOp, ElementwiseOp, EwArg, EwInst, EwProgram, FusedOp, GraphOp, NormKind,
    NormSpec, ReduceKind, UnaryOp,
};

/// The rules of this theme.
pub static RULES: &[Rule] = &[
    Rule {
        name: "gelu-erf",
        theme: Theme::Recognition,
        max_iterations: None,
        search: gelu_erf,
    },
    Rule {
        name: "gelu-tanh",
        theme: Theme::Recognition,
        max_iterations: None,
        search: gelu_tanh,
    },
    Rule {
        name: "silu",
        theme: Theme::Recognition,
        max_iterations: None,
        search: silu,
    },
    Rule {
        name: "layer-norm",
        theme: Theme::Recognition,
        max_iterations: None,
        search: layer_norm,
    },
    Rule {
        name: "rms-norm",
        theme: Theme::Recognition,
        max_iterations: None,
        search: rms_norm,
    },
    Rule {
        name: "softmax",
        theme: Theme::Recognition,
        max_iterations: None,
        search: softmax,
    },
    Rule {
        name: "batchnorm-into-conv",
        theme: Theme::Recognition,
        max_iterations: None,
        search: batchnorm_into_conv,
    },
];

/// Recognitions replace a sequence of rounded steps with one kernel computing in fp32, which is
/// more accurate, and so differs from a reference that rounds every step of a 16-bit
/// composition (onnxruntime does) by a few units in the last place: they apply to fp32 values.
fn fp32(eg: &EG, id: Id) -> bool {
    ty(eg, id).is_some_and(|t| t.dtype == tessera_ir::DType::F32)
}

fn gelu(tanh: bool, x: Id) -> Rhs {
    Rhs::op(GraphOp::Elementwise(ElementwiseOp::Gelu { tanh }), &[x])
}

/// A product `c * x * t` of exactly one constant `c` close to `k` and two classes, one of which
/// is `x`: the other ones.
fn product_with(eg: &EG, id: Id, k: f64) -> Vec<(Id, Id)> {
    let (c, f) = factors(eg, id, 3);
    if f.len() != 2 || !close(c, k) {
        return vec![];
    }
    vec![(f[0], f[1]), (f[1], f[0])]
}

/// `0.5 x (1 + erf(x / sqrt 2))` = GELU(x).
fn gelu_erf(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let mut out = Vec::new();
    for (x, t) in product_with(eg, id, 0.5) {
        for (e, one) in binary(eg, t, BinaryOp::Add) {
            if !is_splat(eg, one, 1.0) {
                continue;
            }
            for u in unary(eg, e, UnaryOp::Erf) {
                if scaled_by(eg, u, std::f64::consts::FRAC_1_SQRT_2).contains(&x) {
                    out.push((id, gelu(false, x)));
                }
            }
        }
    }
    out
}

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` = GELU's tanh form.
fn gelu_tanh(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let mut out = Vec::new();
    for (x, t) in product_with(eg, id, 0.5) {
        for (th, one) in binary(eg, t, BinaryOp::Add) {
            if !is_splat(eg, one, 1.0) {
                continue;
            }
            for inner in unary(eg, th, UnaryOp::Tanh) {
                let (c, f) = factors(eg, inner, 3);
                if f.len() != 1 || !close(c, k) {
                    continue;
                }
                for (xx, cube) in binary(eg, f[0], BinaryOp::Add) {
                    if xx != x {
                        continue;
                    }
                    let (c3, f3) = factors(eg, cube, 3);
                    if !close(c3, 0.044715) {
                        continue;
                    }
                    let is_cube = match f3.as_slice() {
                        [p] => binary(eg, *p, BinaryOp::Pow)
                            .iter()
                            .any(|&(b, e)| b == x && is_splat(eg, e, 3.0)),
                        [a, b, c] => *a == x && *b == x && *c == x,
                        _ => false,
                    };
                    if is_cube {
                        out.push((id, gelu(true, x)));
                    }
                }
            }
        }
    }
    out
}

/// `x * sigmoid(x)` = SiLU(x), a one-step activation program.
fn silu(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let mut out = Vec::new();
    for (x, s) in binary(eg, id, BinaryOp::Mul) {
        if unary(eg, s, UnaryOp::Sigmoid).contains(&x) {
            let p = EwProgram {
                steps: vec![EwInst::Act(Activation::Silu, EwArg::In(0))],
            };
            out.push((id, Rhs::op(GraphOp::Fused(FusedOp::Elementwise(p)), &[x])));
        }
    }
    out
}

/// `ReduceMean(x)` over the last axis with kept dims, in the class: the `x`s.
fn mean_last(eg: &EG, id: Id) -> Vec<Id> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| match op {
            GraphOp::Reduce(r)
                if r.kind == ReduceKind::Mean
                    && r.keepdims
                    && ty(eg, ch[0]).is_some_and(|t| r.axes == [t.shape.len() - 1]) =>
            {
                Some(ch[0])
            }
            _ => None,
        })
        .collect()
}

/// `(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)`, or times the reciprocal of the square
/// root: returns `(x, eps)`.
fn normalised(eg: &EG, id: Id) -> Vec<(Id, f64)> {
    let mut quotients = binary(eg, id, BinaryOp::Div);
    for (d, r) in binary(eg, id, BinaryOp::Mul) {
        for sd in unary(eg, r, UnaryOp::Reciprocal) {
            quotients.push((d, sd));
        }
    }
    let mut out = Vec::new();
    for (d, sd) in quotients {
        let centred: Vec<Id> = binary(eg, d, BinaryOp::Sub)
            .into_iter()
            .filter(|&(x, m)| mean_last(eg, m).contains(&x))
            .map(|(x, _)| x)
            .collect();
        let Some(&x) = centred.first() else { continue };
        for v in unary(eg, sd, UnaryOp::Sqrt) {
            for (var, e) in binary(eg, v, BinaryOp::Add) {
                let Some(eps) = splat_of(eg, e) else { continue };
                let squares_d = mean_last(eg, var).into_iter().any(|sq| {
                    binary(eg, sq, BinaryOp::Pow)
                        .iter()
                        .any(|&(b, p)| b == d && is_splat(eg, p, 2.0))
                        || binary(eg, sq, BinaryOp::Mul)
                            .iter()
                            .any(|&(a, b)| a == d && b == d)
                });
                if squares_d && eps >= 0.0 {
                    out.push((x, eps));
                }
            }
        }
    }
    out
}

/// Written-out LayerNorm over the last axis, optionally `* gamma` and `+ beta` (`[C]`, or any
/// shape broadcasting only along the last axis): the `layer_norm` kernel.
fn layer_norm(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let Some(t) = ty(eg, id) else { return vec![] };
    let Some(&c) = t.shape.last() else {
        return vec![];
    };
    // A per-channel parameter as `[C]`.
    let param = |p: Id| -> Option<Rhs> {
        let pt = ty(eg, p)?;
        if pt.elems() != c || pt.shape.last() != Some(&c) || pt.shape.len() > t.shape.len() {
            return None;
        }
        Some(if pt.shape == [c] {
            Rhs::Class(p)
        } else {
            Rhs::op(GraphOp::Reshape { shape: vec![c] }, &[p])
        })
    };
    let norm = |eps: f64, scale: bool, shift: bool| {
        GraphOp::Fused(FusedOp::Norm(NormSpec {
            kind: NormKind::Layer,
            eps,
            scale,
            shift,
        }))
    };
    let mut out = Vec::new();
    for (x, eps) in normalised(eg, id) {
        out.push((id, Rhs::op(norm(eps, false, false), &[x])));
    }
    for (n, g) in binary(eg, id, BinaryOp::Mul) {
        let Some(gr) = param(g) else { continue };
        for (x, eps) in normalised(eg, n) {
            out.push((
                id,
                Rhs::Op(norm(eps, true, false), vec![Rhs::Class(x), gr.clone()]),
            ));
        }
    }
    for (m, b) in binary(eg, id, BinaryOp::Add) {
        let Some(br) = param(b) else { continue };
        for (n, g) in binary(eg, m, BinaryOp::Mul) {
            let Some(gr) = param(g) else { continue };
            for (x, eps) in normalised(eg, n) {
                out.push((
                    id,
                    Rhs::Op(
                        norm(eps, true, true),
                        vec![Rhs::Class(x), gr.clone(), br.clone()],
                    ),
                ));
            }
        }
    }
    out
}

/// `x / sqrt(mean(x^2) + eps)` over the last axis (or times the reciprocal of the square root),
/// optionally `* gamma` (`[C]`-like): RMSNorm.
fn rms_norm(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let Some(t) = ty(eg, id) else { return vec![] };
    let Some(&c) = t.shape.last() else {
        return vec![];
    };
    let normalised = |id: Id| -> Vec<(Id, f64)> {
        let mut quotients = binary(eg, id, BinaryOp::Div);
        for (x, r) in binary(eg, id, BinaryOp::Mul) {
            for sd in unary(eg, r, UnaryOp::Reciprocal) {
                quotients.push((x, sd));
            }
        }
        let mut out = Vec::new();
        for (x, sd) in quotients {
            for v in unary(eg, sd, UnaryOp::Sqrt) {
                for (ms, e) in binary(eg, v, BinaryOp::Add) {
                    let Some(eps) = splat_of(eg, e) else { continue };
                    let squares_x = mean_last(eg, ms).into_iter().any(|sq| {
                        binary(eg, sq, BinaryOp::Pow)
                            .iter()
                            .any(|&(b, p)| b == x && is_splat(eg, p, 2.0))
                            || binary(eg, sq, BinaryOp::Mul)
                                .iter()
                                .any(|&(a, b)| a == x && b == x)
                    });
                    if squares_x && eps >= 0.0 && ty(eg, x) == Some(t) {
                        out.push((x, eps));
                    }
                }
            }
        }
        out
    };
    let norm = |eps: f64, scale: bool| {
        GraphOp::Fused(FusedOp::Norm(NormSpec {
            kind: NormKind::Rms,
            eps,
            scale,
            shift: false,
        }))
    };
    let mut out = Vec::new();
    for (x, eps) in normalised(id) {
        out.push((id, Rhs::op(norm(eps, false), &[x])));
    }
    for (n, g) in binary(eg, id, BinaryOp::Mul) {
        let Some(gt) = ty(eg, g) else { continue };
        if gt.elems() != c || gt.shape.last() != Some(&c) || gt.shape.len() > t.shape.len() {
            continue;
        }
        let gr = if gt.shape == [c] {
            Rhs::Class(g)
        } else {
            Rhs::op(GraphOp::Reshape { shape: vec![c] }, &[g])
        };
        for (x, eps) in normalised(n) {
            out.push((
                id,
                Rhs::Op(norm(eps, true), vec![Rhs::Class(x), gr.clone()]),
            ));
        }
    }
    out
}

/// `exp(x - max(x)) / sum(exp(x - max(x)))` (or without the max) along one axis, kept dims:
/// Softmax.
fn softmax(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    if !fp32(eg, id) {
        return vec![];
    }
    let reduce_of = |id: Id, kind: ReduceKind| -> Vec<(Id, usize)> {
        ops_in(eg, id)
            .filter_map(|(op, ch)| match op {
                GraphOp::Reduce(r) if r.kind == kind && r.keepdims && r.axes.len() == 1 => {
                    Some((ch[0], r.axes[0]))
                }
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for (e, s) in binary(eg, id, BinaryOp::Div) {
        for (e2, axis) in reduce_of(s, ReduceKind::Sum) {
            if e2 != e {
                continue;
            }
            for z in unary(eg, e, UnaryOp::Exp) {
                let mut xs: Vec<Id> = binary(eg, z, BinaryOp::Sub)
                    .into_iter()
                    .filter(|&(x, m)| reduce_of(m, ReduceKind::Max).contains(&(x, axis)))
                    .map(|(x, _)| x)
                    .collect();
                xs.push(z);
                for x in xs {
                    out.push((id, Rhs::op(GraphOp::Softmax { axis }, &[x])));
                }
            }
        }
    }
    out
}

/// A per-output-channel constant of a convolution result `[N, C, ...]`: `[C, 1, ...]`,
/// `[1, C, 1, ...]` or `[C]`-like shapes broadcasting along channels only; its `C` values.
fn per_channel(eg: &EG, c: Id, out_rank: usize, channels: usize) -> Option<Vec<f64>> {
    let t = const_of(eg, c)?;
    if !t.dtype.is_float() || t.shape.len() > out_rank {
        return None;
    }
    let v = t.to_f64_vec();
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    // Right-aligned against [N, C, spatial...]: only the channel axis may be longer than 1.
    let lead = out_rank - t.shape.len();
    let fits = t
        .shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i + lead == 1 && d == channels));
    (fits && v.len() == channels).then_some(v)
}

/// Inference BatchNormalization after a convolution, `conv(x, W, b) * s + t` with per-channel
/// constants (how BatchNormalization is imported), folded into the convolution's weights and
/// bias: `conv(x, W * s, b * s + t)`. Also a lone scale or shift.
fn batchnorm_into_conv(eg: &EG, id: Id, _: &Ctx) -> Vec<Proposal> {
    let Some(t) = ty(eg, id) else { return vec![] };
    if t.shape.len() < 3 || !t.dtype.is_float() {
        return vec![];
    }
    let channels = t.shape[1];
    let rank = t.shape.len();
    let mut out = Vec::new();
    // (conv class, scale, shift)
    let mut cands: Vec<(Id, Vec<f64>, Vec<f64>)> = Vec::new();
    for (m, sh) in binary(eg, id, BinaryOp::Add) {
        let Some(shift) = per_channel(eg, sh, rank, channels) else {
            continue;
        };
        cands.push((m, vec![1.0; channels], shift.clone()));
        for (cv, sc) in binary(eg, m, BinaryOp::Mul) {
            if let Some(scale) = per_channel(eg, sc, rank, channels) {
                cands.push((cv, scale, shift.clone()));
            }
        }
    }
    for (cv, sc) in binary(eg, id, BinaryOp::Mul) {
        if let Some(scale) = per_channel(eg, sc, rank, channels) {
            cands.push((cv, scale, vec![0.0; channels]));
        }
    }
    for (cv, scale, shift) in cands {
        if ty(eg, cv) != Some(t) {
            continue;
        }
        for (op, ch) in ops_in(eg, cv) {
            let GraphOp::Conv(spec) = op else { continue };
            if spec.transpose {
                continue;
            }
            // Folded already (the folding computes new weights, so it is not repeated).
            if ops_in(eg, id).any(|(o, c2)| o == op && c2[0] == ch[0]) {
                continue;
            }
            let (Some(w), bias) = (const_of(eg, ch[1]), ch.get(2).map(|&b| const_of(eg, b))) else {
                continue;
            };
            let b: Vec<f64> = match bias {
                None => vec![0.0; channels],
                Some(Some(b)) => b.to_f64_vec(),
                Some(None) => continue,
            };
            if w.shape[0] != channels || b.len() != channels {
                continue;
            }
            let per = w.elems() / channels;
            let wv = w.to_f64_vec();
            let w2: Vec<f64> = wv
                .iter()
                .enumerate()
                .map(|(i, &v)| v * scale[i / per])
                .collect();
            let b2: Vec<f64> = (0..channels).map(|k| b[k] * scale[k] + shift[k]).collect();
            out.push((
                id,
                Rhs::Op(
                    op.clone(),
                    vec![
                        Rhs::Class(ch[0]),
                        Rhs::Const(HostTensor::from_f64(w.dtype, &w.shape, &w2)),
                        Rhs::Const(HostTensor::from_f64(w.dtype, &[channels], &b2)),
                    ],
                ),
            ));
        }
    }
    out
}
