//! Fused operators: what the e-graph optimiser rewrites groups of graph nodes into, each lowered
//! to one kernel that keeps its intermediates on chip.
//!
//! Every fused operator is defined by its *expansion* into primitive graph operators
//! ([`FusedOp::expand`]); the reference evaluator evaluates that expansion, so a fused form and
//! the nodes it replaces agree by construction, and the rewrite rules are tested against it.

use super::ops::{BinaryOp, GraphOp, ShapeError, UnaryOp, broadcast_shapes};
use super::reduce::{ReduceKind, ReduceSpec};
use super::{ConvSpec, ElementwiseOp, Graph, GraphError, TensorType, ValueId};
use crate::dtype::DType;
use crate::host::HostTensor;
use ndarray::ArrayD;
use std::collections::BTreeMap;
use std::fmt;

/// An activation applied to a kernel's result while it leaves PSUM (one activation-engine
/// function).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// tanh x
    Tanh,
    /// x Phi(x) (erf form)
    Gelu,
    /// GELU's tanh approximation
    GeluTanh,
    /// x sigmoid(x)
    Silu,
}

impl Activation {
    /// Lower-case name, as printed in plans.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
        }
    }

    /// Adds the primitive nodes computing this activation of `x`.
    fn expand(self, g: &mut Graph, x: ValueId, name: &str) -> Result<ValueId, GraphError> {
        let un = |g: &mut Graph, op, x| -> Result<ValueId, GraphError> {
            Ok(g.add_node(name.to_string(), GraphOp::Unary(op), &[x])?[0])
        };
        match self {
            Activation::Relu => un(g, UnaryOp::Relu, x),
            Activation::Sigmoid => un(g, UnaryOp::Sigmoid, x),
            Activation::Tanh => un(g, UnaryOp::Tanh, x),
            Activation::Gelu | Activation::GeluTanh => Ok(g.add_node(
                name,
                GraphOp::Elementwise(ElementwiseOp::Gelu {
                    tanh: self == Activation::GeluTanh,
                }),
                &[x],
            )?[0]),
            Activation::Silu => {
                let s = un(g, UnaryOp::Sigmoid, x)?;
                Ok(g.add_node(
                    format!("{name}.silu"),
                    GraphOp::Binary(BinaryOp::Mul),
                    &[x, s],
                )?[0])
            }
        }
    }
}

/// `act(alpha * op(A) . op(B) + bias) + residual` as one tensor-engine kernel: the bias, the
/// activation and the residual are applied while the result leaves PSUM.
///
/// Inputs: `a` `[..., M, K]` (`[..., K, M]` when `trans_a`), `b` `[..., K, N]` (`[..., N, K]`
/// when `trans_b`) with numpy batch broadcasting (both at least 2-D), then `bias` `[N]` when
/// `bias`, then `residual` of the result's shape when `residual`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulEpilogue {
    /// A is stored with its last two axes swapped.
    pub trans_a: bool,
    /// B is stored with its last two axes swapped.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f64,
    /// A `[N]` bias input is added.
    pub bias: bool,
    /// The activation, if any.
    pub act: Option<Activation>,
    /// A residual input is added after the activation.
    pub residual: bool,
    /// Kernel configuration, not meaning: the tensor engine holds `op(B)^T` stationary and
    /// streams `op(A)^T`, computing `C^T` in PSUM and storing it transposed. Cheaper when M is
    /// small and N large, since each matmul instruction costs at least 64 cycles whatever
    /// its stationary width and then one per moving column.
    pub swap_roles: bool,
}

impl Default for MatMulEpilogue {
    /// The plain product: no transposes, alpha 1, nothing applied, the usual operand roles.
    fn default() -> Self {
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
}

/// `post(act(conv(x, w) + b) + residual)`: a convolution (not transposed) whose bias,
/// activation, residual and post-residual activation are applied while the result leaves PSUM
/// (ResNet's blocks end in `relu(conv + bias + residual)`). Inputs: `x`, `w`, then `b`
/// `[C_out]` when `bias`, then `residual` of the result's shape when `residual`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvEpilogue {
    /// The convolution.
    pub conv: ConvSpec,
    /// A bias input is present.
    pub bias: bool,
    /// The activation, if any.
    pub act: Option<Activation>,
    /// A residual input is added after the activation.
    pub residual: bool,
    /// The activation applied after the residual (only with `residual`).
    pub post_act: Option<Activation>,
}

/// An operand of an element-wise program step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwArg {
    /// The k-th input of the node.
    In(usize),
    /// The result of the k-th step.
    Step(usize),
    /// A scalar constant.
    Scalar(f64),
}

/// One step of an element-wise program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwInst {
    /// `a OP b` with broadcasting.
    Binary(BinaryOp, EwArg, EwArg),
    /// `op(a)`.
    Unary(UnaryOp, EwArg),
    /// An activation of `a`.
    Act(Activation, EwArg),
}

/// A program of float element-wise steps over the node's (broadcast) inputs, run in one pass:
/// every block is loaded once, every step runs on chip, and only the last step's result is
/// stored. Every step and the result have the first input's dtype.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EwProgram {
    /// The steps; the last one is the result.
    pub steps: Vec<EwInst>,
}

/// Which normalisation a [`NormSpec`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps)` (biased variance).
    Layer,
    /// `x / sqrt(mean(x^2) + eps)`.
    Rms,
}

/// Normalisation over the last axis, then `* gamma` and `+ beta` (each `[C]`, optional). Inputs:
/// `x`, then `gamma` when `scale`, then `beta` when `shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct NormSpec {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Added to the variance (mean square).
    pub eps: f64,
    /// A gamma input is present.
    pub scale: bool,
    /// A beta input is present.
    pub shift: bool,
}

/// Scaled dot-product attention, `softmax(scale * Q K^T + mask) V`, as one kernel that keeps
/// the score matrix on chip. Inputs: `q` `[..., S, D]`, `k` `[..., T, D]`, `v` `[..., T, Dv]`
/// (the same leading axes), then an additive `mask` broadcasting to `[..., S, T]` when `mask`.
/// With `causal`, key positions after the query's (j > i) are excluded as well.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Multiplies the scores.
    pub scale: f64,
    /// An additive mask input is present.
    pub mask: bool,
    /// Future positions are masked.
    pub causal: bool,
}

/// A fused operator (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub enum FusedOp {
    /// Matmul with an epilogue.
    MatMul(MatMulEpilogue),
    /// Convolution with an epilogue.
    Conv(ConvEpilogue),
    /// An element-wise program in one pass.
    Elementwise(EwProgram),
    /// LayerNorm / RMSNorm over the last axis.
    Norm(NormSpec),
    /// Attention that never stores its scores.
    Attention(AttentionSpec),
    /// A transpose moved by the tensor engine in 128 x 128 blocks instead of by DMA access
    /// patterns (a kernel choice for the same `Transpose`): `perm` keeps some leading batch
    /// axes and swaps the two groups of axes after them (see [`pe_transpose_split`]).
    PeTranspose {
        /// The permutation, as `Transpose` has it.
        perm: Vec<usize>,
    },
}

/// For a permutation that keeps the first `b` axes and swaps the next `k` axes with the rest,
/// `Some((b, k))`; the transpose is then a batch of 2-D transposes.
pub fn pe_transpose_split(perm: &[usize]) -> Option<(usize, usize)> {
    let r = perm.len();
    let b = perm.iter().enumerate().take_while(|(i, p)| i == *p).count();
    if b + 2 > r {
        return None;
    }
    // After the batch axes: [b + k, ..., r - 1, b, ..., b + k - 1].
    let k = perm[b].checked_sub(b)?;
    let want: Vec<usize> = (0..b).chain(b + k..r).chain(b..b + k).collect();
    (k > 0 && k < r - b && want == perm).then_some((b, k))
}

impl fmt::Display for FusedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let act = |a: &Option<Activation>| a.map(|a| format!("+{}", a.name())).unwrap_or_default();
        match self {
            FusedOp::MatMul(m) => write!(
                f,
                "matmul{}{}{}{}{}{}{}",
                if m.trans_a { "[ta]" } else { "" },
                if m.trans_b { "[tb]" } else { "" },
                if m.alpha != 1.0 {
                    format!("*{}", m.alpha)
                } else {
                    String::new()
                },
                if m.bias { "+bias" } else { "" },
                act(&m.act),
                if m.residual { "+residual" } else { "" },
                if m.swap_roles { "[swapped]" } else { "" }
            ),
            FusedOp::Conv(c) => write!(
                f,
                "conv{}{}{}{}",
                if c.bias { "+bias" } else { "" },
                act(&c.act),
                if c.residual { "+residual" } else { "" },
                act(&c.post_act)
            ),
            FusedOp::Elementwise(p) => write!(f, "ewchain[{} steps]", p.steps.len()),
            FusedOp::Norm(n) => write!(
                f,
                "{}(eps={:e})",
                match n.kind {
                    NormKind::Layer => "layer_norm",
                    NormKind::Rms => "rms_norm",
                },
                n.eps
            ),
            FusedOp::PeTranspose { perm } => write!(f, "pe_transpose{perm:?}"),
            FusedOp::Attention(a) => write!(
                f,
                "attention(scale={:.6}{}{})",
                a.scale,
                if a.mask { ", mask" } else { "" },
                if a.causal { ", causal" } else { "" }
            ),
        }
    }
}

fn mismatch(s: impl Into<String>) -> ShapeError {
    ShapeError::Mismatch(s.into())
}

fn float(t: &TensorType) -> Result<DType, ShapeError> {
    if t.dtype.is_float() {
        Ok(t.dtype)
    } else {
        Err(mismatch(format!(
            "fused operators take float tensors, got {}",
            t.dtype
        )))
    }
}

/// The shape of `op(A) . op(B)` with batch broadcasting, both operands at least 2-D.
fn matmul_result(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Result<Vec<usize>, ShapeError> {
    if a.len() < 2 || b.len() < 2 {
        return Err(mismatch("fused matmul operands must be at least 2-D"));
    }
    let (ra, rb) = (a.len(), b.len());
    let (m, ka) = if trans_a {
        (a[ra - 1], a[ra - 2])
    } else {
        (a[ra - 2], a[ra - 1])
    };
    let (kb, n) = if trans_b {
        (b[rb - 1], b[rb - 2])
    } else {
        (b[rb - 2], b[rb - 1])
    };
    if ka != kb {
        return Err(mismatch(format!(
            "inner dimensions differ: A gives K={ka}, B gives K={kb}"
        )));
    }
    let mut shape = broadcast_shapes(&a[..ra - 2], &b[..rb - 2])?;
    shape.extend([m, n]);
    Ok(shape)
}

impl FusedOp {
    /// Number of inputs this operator takes.
    pub fn arity(&self) -> usize {
        match self {
            FusedOp::MatMul(m) => 2 + m.bias as usize + m.residual as usize,
            FusedOp::Conv(c) => 2 + c.bias as usize + c.residual as usize,
            FusedOp::Elementwise(p) => p
                .steps
                .iter()
                .flat_map(|s| match *s {
                    EwInst::Binary(_, a, b) => vec![a, b],
                    EwInst::Unary(_, a) | EwInst::Act(_, a) => vec![a],
                })
                .filter_map(|a| match a {
                    EwArg::In(k) => Some(k + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            FusedOp::Norm(n) => 1 + n.scale as usize + n.shift as usize,
            FusedOp::Attention(a) => 3 + a.mask as usize,
            FusedOp::PeTranspose { .. } => 1,
        }
    }

    /// The result type.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, ShapeError> {
        if inputs.len() != self.arity() {
            return Err(ShapeError::Mismatch(format!(
                "{self} expects {} input(s), got {}",
                self.arity(),
                inputs.len()
            )));
        }
        let dtype = float(inputs[0])?;
        if let Some(t) = inputs.iter().find(|t| t.dtype != dtype) {
            return Err(mismatch(format!(
                "operand types differ: {dtype} and {}",
                t.dtype
            )));
        }
        let ty = |shape: Vec<usize>| TensorType { dtype, shape };
        let check_extra = |out: &[usize], at: usize, bias: bool, residual: bool, c: usize| {
            let mut i = at;
            if bias {
                if inputs[i].shape != [c] {
                    return Err(mismatch(format!(
                        "bias must be [{c}], got {:?}",
                        inputs[i].shape
                    )));
                }
                i += 1;
            }
            if residual && inputs[i].shape != out {
                return Err(mismatch(format!(
                    "residual must have the result's shape {out:?}, got {:?}",
                    inputs[i].shape
                )));
            }
            Ok(())
        };
        match self {
            FusedOp::MatMul(m) => {
                let out = matmul_result(&inputs[0].shape, &inputs[1].shape, m.trans_a, m.trans_b)?;
                check_extra(&out, 2, m.bias, m.residual, out[out.len() - 1])?;
                Ok(ty(out))
            }
            FusedOp::Conv(c) => {
                if c.conv.transpose {
                    return Err(mismatch("a fused convolution is not transposed"));
                }
                let out = c.conv.infer(&inputs[..2])?;
                check_extra(&out.shape, 2, c.bias, c.residual, out.shape[1])?;
                Ok(out)
            }
            FusedOp::Elementwise(p) => {
                if p.steps.is_empty() {
                    return Err(mismatch("an element-wise program needs a step"));
                }
                let mut shape = Vec::new();
                for t in inputs {
                    shape = broadcast_shapes(&shape, &t.shape)?;
                }
                for (i, s) in p.steps.iter().enumerate() {
                    let args: Vec<EwArg> = match *s {
                        EwInst::Binary(_, a, b) => vec![a, b],
                        EwInst::Unary(_, a) | EwInst::Act(_, a) => vec![a],
                    };
                    if args.iter().any(|a| matches!(*a, EwArg::Step(k) if k >= i)) {
                        return Err(mismatch(format!("step {i} reads a later step")));
                    }
                }
                Ok(ty(shape))
            }
            FusedOp::Norm(n) => {
                let x = &inputs[0].shape;
                let Some(&c) = x.last() else {
                    return Err(mismatch("normalisation needs at least one axis"));
                };
                if inputs[1..].iter().any(|t| t.shape != [c]) {
                    return Err(mismatch(format!("gamma and beta must be [{c}]")));
                }
                if n.eps.is_nan() || n.eps < 0.0 {
                    return Err(mismatch("eps must be non-negative"));
                }
                Ok(ty(x.clone()))
            }
            FusedOp::PeTranspose { perm } => {
                if pe_transpose_split(perm).is_none() {
                    return Err(mismatch(format!(
                        "{perm:?} is not a batch of 2-D transposes"
                    )));
                }
                let t = GraphOp::Transpose { perm: perm.clone() }.infer(&[inputs[0]])?;
                Ok(t.into_iter().next().expect("one result"))
            }
            FusedOp::Attention(a) => {
                let (q, k, v) = (&inputs[0].shape, &inputs[1].shape, &inputs[2].shape);
                let r = q.len();
                if r < 2 || k.len() != r || v.len() != r {
                    return Err(mismatch("q, k and v must have the same rank, at least 2"));
                }
                if q[..r - 2] != k[..r - 2] || k[..r - 2] != v[..r - 2] {
                    return Err(mismatch("q, k and v must share their leading axes"));
                }
                if q[r - 1] != k[r - 1] || k[r - 2] != v[r - 2] {
                    return Err(mismatch(format!(
                        "q {q:?}, k {k:?} and v {v:?} do not fit together"
                    )));
                }
                if a.mask {
                    let mut scores = q[..r - 1].to_vec();
                    scores.push(k[r - 2]);
                    if broadcast_shapes(&inputs[3].shape, &scores)? != scores {
                        return Err(mismatch(format!(
                            "the mask {:?} does not broadcast to the scores {scores:?}",
                            inputs[3].shape
                        )));
                    }
                }
                let mut out = q[..r - 1].to_vec();
                out.push(v[r - 1]);
                Ok(ty(out))
            }
        }
    }

    /// Adds the primitive nodes this operator stands for to `g`, reading `inputs`, and returns
    /// the result value. Node names start with `name`.
    pub fn expand(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        name: &str,
    ) -> Result<ValueId, GraphError> {
        let dtype = g.ty(inputs[0]).dtype;
        let mut n = 0;
        let mut node = |g: &mut Graph, op: GraphOp, ins: &[ValueId]| {
            n += 1;
            Ok::<_, GraphError>(g.add_node(format!("{name}.{n}"), op, ins)?[0])
        };
        let scalar = |g: &mut Graph, v: f64| {
            let k = g.values.len();
            g.add_constant(
                format!("{name}.c{k}"),
                HostTensor::from_f64(dtype, &[], &[v]),
            )
        };
        match self {
            FusedOp::MatMul(m) => {
                let mut ops = [inputs[0], inputs[1]];
                for (i, t) in [m.trans_a, m.trans_b].into_iter().enumerate() {
                    if t {
                        let r = g.ty(ops[i]).shape.len();
                        let mut perm: Vec<usize> = (0..r).collect();
                        perm.swap(r - 1, r - 2);
                        ops[i] = node(g, GraphOp::Transpose { perm }, &[ops[i]])?;
                    }
                }
                let mut y = node(g, GraphOp::MatMul, &ops)?;
                if m.alpha != 1.0 {
                    let s = scalar(g, m.alpha);
                    y = node(g, GraphOp::Binary(BinaryOp::Mul), &[y, s])?;
                }
                let mut next = 2;
                if m.bias {
                    y = node(g, GraphOp::Binary(BinaryOp::Add), &[y, inputs[next]])?;
                    next += 1;
                }
                if let Some(a) = m.act {
                    y = a.expand(g, y, &format!("{name}.act"))?;
                }
                if m.residual {
                    y = node(g, GraphOp::Binary(BinaryOp::Add), &[y, inputs[next]])?;
                }
                Ok(y)
            }
            FusedOp::Conv(c) => {
                let k = 2 + c.bias as usize;
                let mut y = node(g, GraphOp::Conv(c.conv.clone()), &inputs[..k])?;
                if let Some(a) = c.act {
                    y = a.expand(g, y, &format!("{name}.act"))?;
                }
                if c.residual {
                    y = node(g, GraphOp::Binary(BinaryOp::Add), &[y, inputs[k]])?;
                }
                if let Some(a) = c.post_act {
                    y = a.expand(g, y, &format!("{name}.post_act"))?;
                }
                Ok(y)
            }
            FusedOp::Elementwise(p) => {
                let mut results: Vec<ValueId> = Vec::new();
                for (i, s) in p.steps.iter().enumerate() {
                    let arg = |g: &mut Graph, a: EwArg| match a {
                        EwArg::In(k) => inputs[k],
                        EwArg::Step(k) => results[k],
                        EwArg::Scalar(v) => scalar(g, v),
                    };
                    let v = match *s {
                        EwInst::Binary(op, a, b) => {
                            let (a, b) = (arg(g, a), arg(g, b));
                            node(g, GraphOp::Binary(op), &[a, b])?
                        }
                        EwInst::Unary(op, a) => {
                            let a = arg(g, a);
                            node(g, GraphOp::Unary(op), &[a])?
                        }
                        EwInst::Act(act, a) => {
                            let a = arg(g, a);
                            act.expand(g, a, &format!("{name}.s{i}"))?
                        }
                    };
                    results.push(v);
                }
                Ok(*results
                    .last()
                    .expect("infer checked the program has a step"))
            }
            FusedOp::Norm(spec) => {
                let x = inputs[0];
                let r = g.ty(x).shape.len();
                let mean = |kind| {
                    GraphOp::Reduce(ReduceSpec {
                        kind,
                        axes: vec![r - 1],
                        keepdims: true,
                    })
                };
                let centred = match spec.kind {
                    NormKind::Layer => {
                        let mu = node(g, mean(ReduceKind::Mean), &[x])?;
                        node(g, GraphOp::Binary(BinaryOp::Sub), &[x, mu])?
                    }
                    NormKind::Rms => x,
                };
                let sq = node(g, GraphOp::Binary(BinaryOp::Mul), &[centred, centred])?;
                let var = node(g, mean(ReduceKind::Mean), &[sq])?;
                let eps = scalar(g, spec.eps);
                let var = node(g, GraphOp::Binary(BinaryOp::Add), &[var, eps])?;
                let sd = node(g, GraphOp::Unary(UnaryOp::Sqrt), &[var])?;
                let mut y = node(g, GraphOp::Binary(BinaryOp::Div), &[centred, sd])?;
                let mut next = 1;
                if spec.scale {
                    y = node(g, GraphOp::Binary(BinaryOp::Mul), &[y, inputs[next]])?;
                    next += 1;
                }
                if spec.shift {
                    y = node(g, GraphOp::Binary(BinaryOp::Add), &[y, inputs[next]])?;
                }
                Ok(y)
            }
            FusedOp::PeTranspose { perm } => {
                node(g, GraphOp::Transpose { perm: perm.clone() }, &[inputs[0]])
            }
            FusedOp::Attention(a) => {
                let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
                let kshape = g.ty(k).shape.clone();
                let r = kshape.len();
                let mut perm: Vec<usize> = (0..r).collect();
                perm.swap(r - 1, r - 2);
                let kt = node(g, GraphOp::Transpose { perm }, &[k])?;
                let mut s = node(g, GraphOp::MatMul, &[q, kt])?;
                let sc = scalar(g, a.scale);
                s = node(g, GraphOp::Binary(BinaryOp::Mul), &[s, sc])?;
                if a.mask {
                    s = node(g, GraphOp::Binary(BinaryOp::Add), &[s, inputs[3]])?;
                }
                if a.causal {
                    let (sq, t) = (g.ty(q).shape[r - 2], kshape[r - 2]);
                    let vals: Vec<f64> = (0..sq * t)
                        .map(|e| {
                            if e % t > e / t {
                                f64::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let kk = g.values.len();
                    let m = g.add_constant(
                        format!("{name}.causal{kk}"),
                        HostTensor::from_f64(dtype, &[sq, t], &vals),
                    );
                    s = node(g, GraphOp::Binary(BinaryOp::Add), &[s, m])?;
                }
                let p = node(g, GraphOp::Softmax { axis: r - 1 }, &[s])?;
                node(g, GraphOp::MatMul, &[p, v])
            }
        }
    }

    /// Evaluates the operator on f64 arrays through its expansion.
    pub fn eval(&self, args: &[&ArrayD<f64>], types: &[DType]) -> Result<ArrayD<f64>, String> {
        let mut g = Graph::new("fused");
        let mut feeds = BTreeMap::new();
        let mut ins = Vec::new();
        for (i, (a, &t)) in args.iter().zip(types).enumerate() {
            let name = format!("in{i}");
            ins.push(g.add_input(&name, TensorType::new(t, a.shape())));
            let vals: Vec<f64> = a.iter().copied().collect();
            feeds.insert(name, HostTensor::from_f64(t, a.shape(), &vals));
        }
        let y = self.expand(&mut g, &ins, "f").map_err(|e| e.to_string())?;
        g.outputs.push(y);
        let env = super::eval::evaluate_all(&g, &feeds).map_err(|e| e.to_string())?;
        env.get(&y)
            .cloned()
            .ok_or_else(|| "the expansion produced no result".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::pe_transpose_split;

    #[test]
    fn batched_two_d_transposes_are_recognised() {
        assert_eq!(pe_transpose_split(&[1, 0]), Some((0, 1)));
        assert_eq!(pe_transpose_split(&[0, 2, 1]), Some((1, 1)));
        assert_eq!(pe_transpose_split(&[2, 3, 0, 1]), Some((0, 2)));
        assert_eq!(pe_transpose_split(&[0, 3, 1, 2]), Some((1, 2)));
        assert_eq!(pe_transpose_split(&[0, 2, 1, 3]), None);
        assert_eq!(pe_transpose_split(&[0, 1]), None);
        assert_eq!(pe_transpose_split(&[1, 2, 0, 3]), None);
    }
}
