//! Element-wise operators: math, activations, comparisons, logic, `Where`, variadic
//! reductions (Sum, Mean, Max, Min) and `Clip`.
//!
//! Operators the graph IR has directly become one node ([`GraphOp::Unary`],
//! [`GraphOp::Binary`], [`GraphOp::Elementwise`]); activations with attributes are spelled with
//! those nodes and scalar constants (LeakyRelu as `max(x, 0) + alpha * min(x, 0)`), following the
//! definitions in onnx/docs/Operators.md.

use super::ImportError;
use super::import::{Importer, NodeCx};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BinaryOp, ElementwiseOp, GraphOp, UnaryOp, ValueId};
use tessera_ir::host::HostTensor;

/// The first ai.onnx opset of each operator this module converts.
pub fn since_opset(op_type: &str) -> Option<i64> {
    Some(match op_type {
        "Pow" | "Sqrt" | "Reciprocal" | "Exp" | "Log" | "Neg" | "Abs" | "Floor" | "Ceil"
        | "Sum" | "Mean" | "Max" | "Min" | "Clip" | "LeakyRelu" | "PRelu" | "Elu" | "Selu"
        | "HardSigmoid" | "Softplus" | "Softsign" | "Equal" | "Less" | "Greater" | "And" | "Or"
        | "Xor" | "Not" => 1,
        "Sin" | "Cos" => 7,
        "Erf" | "Sign" | "Where" | "IsNaN" => 9,
        "Mod" | "IsInf" => 10,
        "Round" => 11,
        "LessOrEqual" | "GreaterOrEqual" | "Celu" => 12,
        "HardSwish" => 14,
        "CastLike" => 15,
        "Mish" => 18,
        "Gelu" => 20,
        _ => return None,
    })
}

/// True for the operators [`convert`] handles.
pub fn handles(op_type: &str) -> bool {
    since_opset(op_type).is_some()
}

/// Builds the nodes of one ONNX node: intermediate nodes are named `<node>/<k>`, the last one
/// after the node.
struct Build<'i, 'm, 'c> {
    imp: &'i mut Importer<'m>,
    cx: &'c NodeCx<'c>,
    steps: usize,
    /// The 16-bit float type the node's operands had, when they were widened to f32 so that a
    /// composition rounds once, as the operator's definition does.
    narrow: Option<DType>,
}

impl Build<'_, '_, '_> {
    /// A 16-bit float operand converted to f32 (remembering to convert the result back).
    fn widen(&mut self, v: ValueId) -> Result<ValueId, ImportError> {
        let dtype = self.imp.ty(v).dtype;
        if !matches!(dtype, DType::F16 | DType::Bf16) {
            return Ok(v);
        }
        self.narrow = Some(dtype);
        self.op(GraphOp::Cast { to: DType::F32 }, &[v])
    }

    /// Input 0, widened.
    fn x(&mut self) -> Result<ValueId, ImportError> {
        let x = self.cx.input(0)?;
        self.widen(x)
    }

    fn op(&mut self, op: GraphOp, ins: &[ValueId]) -> Result<ValueId, ImportError> {
        self.steps += 1;
        let name = format!("{}/{}", self.cx.name, self.steps);
        self.imp.emit(self.cx, &name, op, ins)
    }

    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, ImportError> {
        self.op(GraphOp::Binary(op), &[a, b])
    }

    fn un(&mut self, op: UnaryOp, a: ValueId) -> Result<ValueId, ImportError> {
        self.op(GraphOp::Unary(op), &[a])
    }

    /// A scalar constant of `like`'s dtype.
    fn k(&mut self, v: f64, like: ValueId) -> ValueId {
        let dtype = self.imp.ty(like).dtype;
        let name = format!("{}/c", self.cx.name);
        self.imp
            .constant(&name, HostTensor::from_f64(dtype, &[], &[v]))
    }

    /// `a OP scalar`.
    fn bin_k(&mut self, op: BinaryOp, a: ValueId, v: f64) -> Result<ValueId, ImportError> {
        let c = self.k(v, a);
        self.bin(op, a, c)
    }

    /// `max(x, 0)` and `min(x, 0)`.
    fn split(&mut self, x: ValueId) -> Result<(ValueId, ValueId), ImportError> {
        let pos = self.bin_k(BinaryOp::Max, x, 0.0)?;
        let neg = self.bin_k(BinaryOp::Min, x, 0.0)?;
        Ok((pos, neg))
    }

    /// `ln(1 + e^x)` as `max(x, 0) + ln(1 + e^-|x|)`, which neither overflows nor cancels.
    fn softplus(&mut self, x: ValueId) -> Result<ValueId, ImportError> {
        let pos = self.bin_k(BinaryOp::Max, x, 0.0)?;
        let a = self.un(UnaryOp::Abs, x)?;
        let na = self.un(UnaryOp::Neg, a)?;
        let e = self.un(UnaryOp::Exp, na)?;
        let e1 = self.bin_k(BinaryOp::Add, e, 1.0)?;
        let l = self.un(UnaryOp::Log, e1)?;
        self.bin(BinaryOp::Add, pos, l)
    }

    /// `max(0, min(1, alpha x + beta))`.
    fn hard_sigmoid(&mut self, x: ValueId, alpha: f64, beta: f64) -> Result<ValueId, ImportError> {
        let ax = self.bin_k(BinaryOp::Mul, x, alpha)?;
        let axb = self.bin_k(BinaryOp::Add, ax, beta)?;
        let lo = self.bin_k(BinaryOp::Min, axb, 1.0)?;
        self.bin_k(BinaryOp::Max, lo, 0.0)
    }

    /// `alpha * (e^min(x, 0) - 1)`: the negative branch of Elu and Selu.
    fn elu_tail(&mut self, neg: ValueId, alpha: f64) -> Result<ValueId, ImportError> {
        let e = self.un(UnaryOp::Exp, neg)?;
        let em1 = self.bin_k(BinaryOp::Sub, e, 1.0)?;
        self.bin_k(BinaryOp::Mul, em1, alpha)
    }
}

fn arity(cx: &NodeCx, lo: usize, hi: usize) -> Result<(), ImportError> {
    let n = cx.proto.input.len();
    if (lo..=hi).contains(&n) {
        Ok(())
    } else {
        Err(cx.attr_err(format!("expects {lo} to {hi} input(s), the node lists {n}")))
    }
}

/// Before opset 7, the binary operators take `broadcast`/`axis` attributes (Less-1, And-1, ...);
/// an explicit `axis` aligns B differently from numpy, which is not imported.
fn legacy_broadcast(imp: &Importer, cx: &NodeCx) -> Result<(), ImportError> {
    if imp.opset < 7 && cx.attrs.has("axis") {
        return Err(ImportError::Opset {
            detail: format!(
                "node \"{}\" ({}): the legacy `axis` broadcast (before opset 7) is not imported",
                cx.name,
                cx.op_type()
            ),
        });
    }
    Ok(())
}

/// Converts one node of an operator [`handles`] accepts.
pub fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<ValueId, ImportError> {
    use ElementwiseOp as E;
    let op_type = cx.op_type();
    let unary = match op_type {
        "Sqrt" => Some(GraphOp::Unary(UnaryOp::Sqrt)),
        "Reciprocal" => Some(GraphOp::Unary(UnaryOp::Reciprocal)),
        "Exp" => Some(GraphOp::Unary(UnaryOp::Exp)),
        "Log" => Some(GraphOp::Unary(UnaryOp::Log)),
        "Erf" => Some(GraphOp::Unary(UnaryOp::Erf)),
        "Neg" => Some(GraphOp::Unary(UnaryOp::Neg)),
        "Abs" => Some(GraphOp::Unary(UnaryOp::Abs)),
        "Sign" => Some(GraphOp::Elementwise(E::Sign)),
        "Floor" => Some(GraphOp::Elementwise(E::Floor)),
        "Ceil" => Some(GraphOp::Elementwise(E::Ceil)),
        "Round" => Some(GraphOp::Elementwise(E::Round)),
        "Sin" => Some(GraphOp::Elementwise(E::Sin)),
        "Cos" => Some(GraphOp::Elementwise(E::Cos)),
        "Not" => Some(GraphOp::Elementwise(E::Not)),
        "IsNaN" => Some(GraphOp::Elementwise(E::IsNaN)),
        // IsInf-10: detect_positive / detect_negative default to 1.
        "IsInf" => Some(GraphOp::Elementwise(E::IsInf {
            positive: cx.attrs.flag_or("detect_positive", true)?,
            negative: cx.attrs.flag_or("detect_negative", true)?,
        })),
        // Gelu-20: approximate is "none" (exact, with erf) or "tanh".
        "Gelu" => {
            let approx = cx.attrs.string("approximate")?.unwrap_or(b"none");
            let tanh = match approx {
                b"none" => false,
                b"tanh" => true,
                other => {
                    return Err(cx.attr_err(format!(
                        "approximate must be \"none\" or \"tanh\", got {:?}",
                        String::from_utf8_lossy(other)
                    )));
                }
            };
            Some(GraphOp::Elementwise(E::Gelu { tanh }))
        }
        _ => None,
    };
    if let Some(op) = unary {
        arity(cx, 1, 1)?;
        return imp.emit(cx, cx.name, op, &[cx.input(0)?]);
    }
    let binary = match op_type {
        "Equal" => Some(GraphOp::Elementwise(E::Equal)),
        "Less" => Some(GraphOp::Elementwise(E::Less)),
        "Greater" => Some(GraphOp::Elementwise(E::Greater)),
        "LessOrEqual" => Some(GraphOp::Elementwise(E::LessOrEqual)),
        "GreaterOrEqual" => Some(GraphOp::Elementwise(E::GreaterOrEqual)),
        "And" => Some(GraphOp::Elementwise(E::And)),
        "Or" => Some(GraphOp::Elementwise(E::Or)),
        "Xor" => Some(GraphOp::Elementwise(E::Xor)),
        // Mod-10: fmod=0 (default) is the floored remainder, fmod=1 C's fmod.
        "Mod" => Some(GraphOp::Elementwise(E::Mod {
            fmod: cx.attrs.flag_or("fmod", false)?,
        })),
        _ => None,
    };
    if let Some(op) = binary {
        arity(cx, 2, 2)?;
        legacy_broadcast(imp, cx)?;
        return imp.emit(cx, cx.name, op, &[cx.input(0)?, cx.input(1)?]);
    }
    let mut b = Build {
        imp,
        cx,
        steps: 0,
        narrow: None,
    };
    let a = &cx.attrs;
    let y = match op_type {
        "Where" => {
            arity(cx, 3, 3)?;
            let ins = [cx.input(0)?, cx.input(1)?, cx.input(2)?];
            b.op(GraphOp::Elementwise(E::Where), &ins)?
        }
        // Pow-12 and later allow an exponent of another type; the result has the base's type,
        // so the exponent is cast to it.
        "Pow" => {
            arity(cx, 2, 2)?;
            legacy_broadcast(b.imp, cx)?;
            let (x, mut e) = (cx.input(0)?, cx.input(1)?);
            let to = b.imp.ty(x).dtype;
            if b.imp.ty(e).dtype != to {
                e = b.op(GraphOp::Cast { to }, &[e])?;
            }
            b.bin(BinaryOp::Pow, x, e)?
        }
        // CastLike-15: cast input 0 to the element type of input 1.
        "CastLike" => {
            arity(cx, 2, 2)?;
            let to = b.imp.ty(cx.input(1)?).dtype;
            // CastLike-19 `saturate=0`: out-of-range float8 values become NaN/inf, which the
            // device's saturating conversion does not do (as for Cast).
            if b.imp.opset >= 19
                && a.int("saturate")? == Some(0)
                && matches!(to, DType::Fp8E4m3 | DType::Fp8E5m2)
            {
                return Err(ImportError::Type {
                    what: format!("node \"{}\" (CastLike)", cx.name),
                    elem_type: format!("non-saturating {to}"),
                    detail: " (the device's float8 conversion saturates)".into(),
                });
            }
            b.op(GraphOp::Cast { to }, &[cx.input(0)?])?
        }
        // Sum/Mean/Max/Min: variadic; numpy broadcasting from opset 8, equal shapes before
        // (which broadcasting accepts too).
        "Sum" | "Mean" | "Max" | "Min" => {
            let ins: Vec<ValueId> = cx.inputs.iter().flatten().copied().collect();
            let Some((&first, rest)) = ins.split_first() else {
                return Err(cx.attr_err("expects at least one input"));
            };
            let op = match op_type {
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                _ => BinaryOp::Add,
            };
            let mut acc = first;
            for &v in rest {
                acc = b.bin(op, acc, v)?;
            }
            if op_type == "Mean" {
                acc = b.bin_k(BinaryOp::Div, acc, ins.len() as f64)?;
            } else if rest.is_empty() {
                acc = b.op(GraphOp::Identity, &[acc])?;
            }
            acc
        }
        // Clip-1/-6: `min`/`max` attributes (absent: unbounded). Clip-11+: optional inputs.
        // Either way min(max(x, lo), hi), so lo > hi gives hi as onnxruntime does.
        "Clip" => {
            let x = cx.input(0)?;
            let (lo, hi) = if b.imp.opset < 11 {
                arity(cx, 1, 1)?;
                let lo = a.float("min")?.map(|v| b.k(f64::from(v), x));
                let hi = a.float("max")?.map(|v| b.k(f64::from(v), x));
                (lo, hi)
            } else {
                arity(cx, 1, 3)?;
                (cx.opt_input(1), cx.opt_input(2))
            };
            let mut y = x;
            if let Some(lo) = lo {
                y = b.bin(BinaryOp::Max, y, lo)?;
            }
            if let Some(hi) = hi {
                y = b.bin(BinaryOp::Min, y, hi)?;
            }
            if y == x {
                y = b.op(GraphOp::Identity, &[x])?;
            }
            y
        }
        // LeakyRelu: x < 0 ? alpha x : x (alpha 0.01).
        "LeakyRelu" => {
            arity(cx, 1, 1)?;
            let alpha = f64::from(a.float_or("alpha", 0.01)?);
            let x = b.x()?;
            let (pos, neg) = b.split(x)?;
            let an = b.bin_k(BinaryOp::Mul, neg, alpha)?;
            b.bin(BinaryOp::Add, pos, an)?
        }
        // PRelu: x < 0 ? slope x : x, slope broadcasting to x (unidirectionally from PRelu-7).
        "PRelu" => {
            arity(cx, 2, 2)?;
            let x = b.x()?;
            let (pos, neg) = b.split(x)?;
            let slope = b.widen(cx.input(1)?)?;
            let sn = b.bin(BinaryOp::Mul, neg, slope)?;
            b.bin(BinaryOp::Add, pos, sn)?
        }
        // Elu: x < 0 ? alpha (e^x - 1) : x (alpha 1).
        "Elu" => {
            arity(cx, 1, 1)?;
            let alpha = f64::from(a.float_or("alpha", 1.0)?);
            let x = b.x()?;
            let (pos, neg) = b.split(x)?;
            let t = b.elu_tail(neg, alpha)?;
            b.bin(BinaryOp::Add, pos, t)?
        }
        // Selu: gamma (x <= 0 ? alpha (e^x - 1) : x), with the spec's default constants.
        "Selu" => {
            arity(cx, 1, 1)?;
            let alpha = f64::from(a.float_or("alpha", 1.673_263_2)?);
            let gamma = f64::from(a.float_or("gamma", 1.050_701)?);
            let x = b.x()?;
            let (pos, neg) = b.split(x)?;
            let t = b.elu_tail(neg, alpha)?;
            let s = b.bin(BinaryOp::Add, pos, t)?;
            b.bin_k(BinaryOp::Mul, s, gamma)?
        }
        // Celu-12: max(0, x) + min(0, alpha (e^(x / alpha) - 1)) (alpha 1).
        "Celu" => {
            arity(cx, 1, 1)?;
            let alpha = f64::from(a.float_or("alpha", 1.0)?);
            let x = b.x()?;
            let pos = b.bin_k(BinaryOp::Max, x, 0.0)?;
            let xa = b.bin_k(BinaryOp::Div, x, alpha)?;
            let t = b.elu_tail(xa, alpha)?;
            let neg = b.bin_k(BinaryOp::Min, t, 0.0)?;
            b.bin(BinaryOp::Add, pos, neg)?
        }
        // HardSigmoid: max(0, min(1, alpha x + beta)) (alpha 0.2, beta 0.5).
        "HardSigmoid" => {
            arity(cx, 1, 1)?;
            let alpha = f64::from(a.float_or("alpha", 0.2)?);
            let beta = f64::from(a.float_or("beta", 0.5)?);
            {
                let x = b.x()?;
                b.hard_sigmoid(x, alpha, beta)?
            }
        }
        // HardSwish-14: x * HardSigmoid(x) with alpha 1/6, beta 0.5.
        "HardSwish" => {
            arity(cx, 1, 1)?;
            let x = b.x()?;
            let h = b.hard_sigmoid(x, 1.0 / 6.0, 0.5)?;
            b.bin(BinaryOp::Mul, x, h)?
        }
        "Softplus" => {
            arity(cx, 1, 1)?;
            {
                let x = b.x()?;
                b.softplus(x)?
            }
        }
        // Softsign: x / (1 + |x|).
        "Softsign" => {
            arity(cx, 1, 1)?;
            let x = b.x()?;
            let ab = b.un(UnaryOp::Abs, x)?;
            let d = b.bin_k(BinaryOp::Add, ab, 1.0)?;
            b.bin(BinaryOp::Div, x, d)?
        }
        // Mish-18: x * tanh(softplus(x)).
        "Mish" => {
            arity(cx, 1, 1)?;
            let x = b.x()?;
            let sp = b.softplus(x)?;
            let t = b.un(UnaryOp::Tanh, sp)?;
            b.bin(BinaryOp::Mul, x, t)?
        }
        other => return Err(cx.attr_err(format!("operator {other} is not imported"))),
    };
    match b.narrow {
        Some(to) => b.op(GraphOp::Cast { to }, &[y]),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_is_listed() {
        for op in ["Pow", "Where", "Gelu", "CastLike", "IsInf"] {
            assert!(handles(op), "{op}");
            assert!(super::super::SUPPORTED_OPS.contains(&op), "{op}");
        }
        assert!(!handles("Det"));
    }
}
