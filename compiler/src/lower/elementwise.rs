//! Lowering of [`GraphOp::Elementwise`](tessera_ir::graph::GraphOp::Elementwise): each operator
//! becomes one `ewchain` kernel, a few vector-engine (ALU) or activation steps per element.
//!
//! Compositions: Floor is `x - (x mod 1)` (the ALU's `mod` is floored, and the fraction of an
//! fp32 value is exact), Ceil `x + (-x mod 1)`, Round-half-to-even adds one to the floor when the
//! fraction is over a half, or exactly a half and the floor odd. Mod with `fmod=1` is
//! `sign(a) * (|a| mod |b|)`. Predicates and logic write bool tiles directly; Where is `select`.

use super::{Binding, LowerError, Lowering};
use tessera_ir::graph::{ElementwiseOp, Node};
use tessera_ir::{ActFunc, AluOp, DType, TensorId};
use tessera_kernels::library::{self, EwChain, EwStep, Operand};

use EwStep::{Act, Alu, AluScalar, Select};
use Operand::{In, Step};

impl Lowering<'_> {
    pub(super) fn elementwise(
        &mut self,
        node: &Node,
        op: ElementwiseOp,
        ins: &[TensorId],
    ) -> Result<(), LowerError> {
        let g = self.graph;
        let in_types: Vec<(Vec<usize>, DType)> = node
            .inputs
            .iter()
            .map(|&i| (g.ty(i).shape.clone(), g.ty(i).dtype))
            .collect();
        let out_id = node.outputs[0];
        let out_dtype = g.ty(out_id).dtype;
        let x = in_types[0].1;
        let steps = steps(op, x, out_dtype)
            .ok_or_else(|| Self::unsupported(node, format!("{} on {x} tensors", op.name())))?;
        let chain = EwChain {
            inputs: in_types,
            steps,
            out_dtype,
        };
        let k = self.kernel(node, library::ewchain(self.target, &chain))?;
        let out = self.result_tensor(out_id);
        let names = ["x0", "x1", "x2"];
        let mut b: Vec<Binding<'_>> = names
            .iter()
            .zip(ins)
            .map(|(n, &t)| Binding::whole(n, t))
            .collect();
        b.push(Binding::whole("y", out));
        self.link(&node.name, &k, &b)
    }
}

/// The steps computing `op` for operands of dtype `x` and a result of dtype `out`; `None` when there is no composition yet.
fn steps(op: ElementwiseOp, x: DType, out: DType) -> Option<Vec<(EwStep, DType)>> {
    use ElementwiseOp as E;
    let b = DType::Bool;
    let float = x.is_float();
    Some(match op {
        E::Equal => vec![(Alu(In(0), AluOp::Eq, In(1)), b)],
        E::Less => vec![(Alu(In(0), AluOp::Lt, In(1)), b)],
        E::Greater => vec![(Alu(In(0), AluOp::Gt, In(1)), b)],
        E::LessOrEqual => vec![(Alu(In(0), AluOp::Le, In(1)), b)],
        E::GreaterOrEqual => vec![(Alu(In(0), AluOp::Ge, In(1)), b)],
        E::And => vec![(Alu(In(0), AluOp::And, In(1)), b)],
        E::Or => vec![(Alu(In(0), AluOp::Or, In(1)), b)],
        E::Xor => vec![(Alu(In(0), AluOp::Xor, In(1)), b)],
        E::Not => vec![(AluScalar(In(0), AluOp::Eq, 0.0), b)],
        E::Where => vec![(Select(In(0), In(1), In(2)), out)],
        // NaN is the only value unequal to itself.
        E::IsNaN => vec![(Alu(In(0), AluOp::Ne, In(0)), b)],
        E::IsInf { positive, negative } => match (positive, negative) {
            (true, true) => vec![
                (Act(In(0), ActFunc::Abs), DType::F32),
                (AluScalar(Step(0), AluOp::Eq, f64::INFINITY), b),
            ],
            (true, false) => vec![(AluScalar(In(0), AluOp::Eq, f64::INFINITY), b)],
            (false, true) => vec![(AluScalar(In(0), AluOp::Eq, f64::NEG_INFINITY), b)],
            // Nothing is detected: a comparison that never holds.
            (false, false) => vec![(AluScalar(In(0), AluOp::Lt, f64::NEG_INFINITY), b)],
        },
        E::Mod { fmod: false } => vec![(Alu(In(0), AluOp::Mod, In(1)), x)],
        E::Mod { fmod: true } => vec![
            // |a| = max(a, -a), |b| likewise
            (AluScalar(In(0), AluOp::Mul, -1.0), x),
            (Alu(In(0), AluOp::Max, Step(0)), x),
            (AluScalar(In(1), AluOp::Mul, -1.0), x),
            (Alu(In(1), AluOp::Max, Step(2)), x),
            // r = |a| mod |b| >= 0; the result is -r when a < 0
            (Alu(Step(1), AluOp::Mod, Step(3)), x),
            (AluScalar(Step(4), AluOp::Mul, -1.0), x),
            (AluScalar(In(0), AluOp::Lt, 0.0), b),
            (Select(Step(6), Step(5), Step(4)), x),
        ],
        E::Sign if float => keep_special(vec![(Act(In(0), ActFunc::Sign), x)], x),
        // (x > 0) - (x < 0) for integers
        E::Sign => vec![
            (AluScalar(In(0), AluOp::Gt, 0.0), x),
            (AluScalar(In(0), AluOp::Lt, 0.0), x),
            (Alu(Step(0), AluOp::Sub, Step(1)), x),
        ],
        E::Floor if float => keep_special(
            vec![
                (AluScalar(In(0), AluOp::Mod, 1.0), x),
                (Alu(In(0), AluOp::Sub, Step(0)), x),
            ],
            x,
        ),
        E::Ceil if float => keep_special(
            vec![
                (AluScalar(In(0), AluOp::Mul, -1.0), x),
                (AluScalar(Step(0), AluOp::Mod, 1.0), x),
                (Alu(In(0), AluOp::Add, Step(1)), x),
            ],
            x,
        ),
        E::Round if float => keep_special(
            vec![
                // fraction f in [0, 1) and floor x - f
                (AluScalar(In(0), AluOp::Mod, 1.0), x),
                (Alu(In(0), AluOp::Sub, Step(0)), x),
                // up = (f > 0.5) + (f == 0.5) * (floor mod 2)
                (AluScalar(Step(0), AluOp::Gt, 0.5), x),
                (AluScalar(Step(0), AluOp::Eq, 0.5), x),
                (AluScalar(Step(1), AluOp::Mod, 2.0), x),
                (Alu(Step(3), AluOp::Mul, Step(4)), x),
                (Alu(Step(2), AluOp::Add, Step(5)), x),
                (Alu(Step(1), AluOp::Add, Step(6)), x),
            ],
            x,
        ),
        E::Gelu { tanh } if float => {
            let f = if tanh {
                ActFunc::GeluTanh
            } else {
                ActFunc::Gelu
            };
            vec![(Act(In(0), f), x)]
        }
        E::Sin if float => vec![(Act(In(0), ActFunc::Sin), x)],
        E::Cos if float => vec![(Act(In(0), ActFunc::Cos), x)],
        E::Floor | E::Ceil | E::Round | E::Gelu { .. } | E::Sin | E::Cos => return None,
    })
}

/// Appends `r != r ? x : r` to a chain whose result `r` is NaN exactly where `x` is NaN or an
/// infinity (`inf mod 1` is NaN; the activation engine's sign maps NaN to 0, so Sign checks `x`
/// instead): those inputs are their own floor, ceiling, rounding and sign (numpy's, which the
/// ONNX reference uses).
fn keep_special(mut steps: Vec<(EwStep, DType)>, x: DType) -> Vec<(EwStep, DType)> {
    let r = steps.len() - 1;
    let probe = if matches!(steps[r].0, Act(_, ActFunc::Sign)) {
        In(0)
    } else {
        Step(r)
    };
    steps.push((Alu(probe, AluOp::Ne, probe), DType::Bool));
    steps.push((Select(Step(r + 1), In(0), Step(r)), x));
    steps
}
