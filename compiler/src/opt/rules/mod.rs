//! The rule sets, one file per theme, and the helpers rules match with.
//!
//! A rule is a function from one e-class to proposed equalities (see [`super::rewrite`]). The
//! helpers here look through a class's e-nodes for an operator of some shape; commutative
//! operators are matched both ways round.

pub mod algebra;
pub mod fusion;
pub mod kernel;
pub mod layout;
pub mod multi;
pub mod recognition;

use super::lang::{EG, ops_in, splat_of};
use super::rewrite::{Rule, Theme};
use egg::Id;
use tessera_ir::graph::{BinaryOp, GraphOp, TensorType, UnaryOp};

/// Every rule of the given themes, in a fixed order.
pub fn rules(themes: &[Theme]) -> Vec<&'static Rule> {
    let all: [&'static [Rule]; 6] = [
        algebra::RULES,
        recognition::RULES,
        fusion::RULES,
        multi::RULES,
        layout::RULES,
        kernel::RULES,
    ];
    all.iter()
        .flat_map(|r| r.iter())
        .filter(|r| themes.contains(&r.theme))
        .collect()
}

/// The class's single result type (`None` for multi-result nodes).
pub fn ty(eg: &EG, id: Id) -> Option<&TensorType> {
    let t = &eg[id].data.types;
    (t.len() == 1).then(|| &t[0])
}

/// Operand pairs `(a, b)` of `op` e-nodes in the class, both orders for commutative `op`.
pub fn binary(eg: &EG, id: Id, op: BinaryOp) -> Vec<(Id, Id)> {
    let commutes = matches!(
        op,
        BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
    );
    let mut out = Vec::new();
    for (o, ch) in ops_in(eg, id) {
        if *o == GraphOp::Binary(op) {
            out.push((ch[0], ch[1]));
            if commutes && ch[0] != ch[1] {
                out.push((ch[1], ch[0]));
            }
        }
    }
    out
}

/// Operands of `op` e-nodes in the class.
pub fn unary(eg: &EG, id: Id, op: UnaryOp) -> Vec<Id> {
    ops_in(eg, id)
        .filter(|(o, _)| **o == GraphOp::Unary(op))
        .map(|(_, ch)| ch[0])
        .collect()
}

/// The class is a splat constant close to `v` (relative `1e-6`, f32 rounding of e.g.
/// `sqrt(2)` included).
pub fn is_splat(eg: &EG, id: Id, v: f64) -> bool {
    splat_of(eg, id).is_some_and(|x| (x - v).abs() <= 1e-6 * v.abs().max(1e-30))
}

/// `x * c` or `x / (1/c)` for a splat `c` close to `v`: the `x`s.
pub fn scaled_by(eg: &EG, id: Id, v: f64) -> Vec<Id> {
    let mut out: Vec<Id> = binary(eg, id, BinaryOp::Mul)
        .into_iter()
        .filter(|&(_, c)| is_splat(eg, c, v))
        .map(|(x, _)| x)
        .collect();
    out.extend(
        binary(eg, id, BinaryOp::Div)
            .into_iter()
            .filter(|&(_, c)| is_splat(eg, c, 1.0 / v))
            .map(|(x, _)| x),
    );
    out
}

/// The factors of a product tree rooted at the class (through at most `depth` levels of `Mul`,
/// first `Mul` e-node of each class), splat constants multiplied into one coefficient.
pub fn factors(eg: &EG, id: Id, depth: usize) -> (f64, Vec<Id>) {
    if let Some(v) = splat_of(eg, id) {
        return (v, vec![]);
    }
    if depth > 0
        && let Some((a, b)) = binary(eg, id, BinaryOp::Mul).into_iter().next()
    {
        let (ka, mut fa) = factors(eg, a, depth - 1);
        let (kb, fb) = factors(eg, b, depth - 1);
        fa.extend(fb);
        return (ka * kb, fa);
    }
    (1.0, vec![id])
}

/// Relative closeness of two coefficients at f32 precision.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-30)
}

/// The operand of an activation e-node in the class, with the activation.
pub fn activations(eg: &EG, id: Id) -> Vec<(tessera_ir::graph::Activation, Id)> {
    use tessera_ir::graph::{Activation, ElementwiseOp, EwArg, EwInst, FusedOp};
    let mut out = Vec::new();
    for (o, ch) in ops_in(eg, id) {
        let a = match o {
            GraphOp::Unary(UnaryOp::Relu) => Activation::Relu,
            GraphOp::Unary(UnaryOp::Sigmoid) => Activation::Sigmoid,
            GraphOp::Unary(UnaryOp::Tanh) => Activation::Tanh,
            GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: false }) => Activation::Gelu,
            GraphOp::Elementwise(ElementwiseOp::Gelu { tanh: true }) => Activation::GeluTanh,
            GraphOp::Fused(FusedOp::Elementwise(p)) if p.steps.len() == 1 && ch.len() == 1 => {
                match p.steps[0] {
                    EwInst::Act(a, EwArg::In(0)) => a,
                    _ => continue,
                }
            }
            _ => continue,
        };
        out.push((a, ch[0]));
    }
    out
}
