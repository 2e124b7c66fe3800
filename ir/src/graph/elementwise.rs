//! Element-wise operators beyond [`super::UnaryOp`] and [`super::BinaryOp`]: predicates with
//! bool results, logical operators, `Where`, and operators with attributes (`Mod`'s `fmod`,
//! `IsInf`'s flags, `Gelu`'s approximation). The shape rule and the reference semantics live
//! here; [`super::GraphOp::Elementwise`] dispatches to them.

use super::TensorType;
use super::ops::{ShapeError, broadcast_shapes};
use crate::dtype::DType;
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

/// An element-wise operator of [`super::GraphOp::Elementwise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementwiseOp {
    /// a == b (bool result)
    Equal,
    /// a < b (bool result)
    Less,
    /// a > b (bool result)
    Greater,
    /// a <= b (bool result)
    LessOrEqual,
    /// a >= b (bool result)
    GreaterOrEqual,
    /// a && b on bools
    And,
    /// a || b on bools
    Or,
    /// a xor b on bools
    Xor,
    /// !a on bools
    Not,
    /// `cond ? x : y` with three-way broadcasting; cond is bool
    Where,
    /// x is NaN (bool result)
    IsNaN,
    /// x is an infinity of a selected sign (bool result)
    IsInf {
        /// +inf counts.
        positive: bool,
        /// -inf counts.
        negative: bool,
    },
    /// Remainder: floored (sign of the divisor) unless `fmod`, then truncated (sign of the
    /// dividend, C `fmod`).
    Mod {
        /// Truncated remainder.
        fmod: bool,
    },
    /// -1, 0 or 1
    Sign,
    /// largest integer <= x
    Floor,
    /// smallest integer >= x
    Ceil,
    /// nearest integer, halves to even
    Round,
    /// x * Phi(x), or its tanh approximation
    Gelu {
        /// The tanh approximation (`approximate="tanh"`).
        tanh: bool,
    },
    /// sin x
    Sin,
    /// cos x
    Cos,
}

impl ElementwiseOp {
    /// The ONNX operator name.
    pub fn name(self) -> &'static str {
        use ElementwiseOp::*;
        match self {
            Equal => "Equal",
            Less => "Less",
            Greater => "Greater",
            LessOrEqual => "LessOrEqual",
            GreaterOrEqual => "GreaterOrEqual",
            And => "And",
            Or => "Or",
            Xor => "Xor",
            Not => "Not",
            Where => "Where",
            IsNaN => "IsNaN",
            IsInf { .. } => "IsInf",
            Mod { .. } => "Mod",
            Sign => "Sign",
            Floor => "Floor",
            Ceil => "Ceil",
            Round => "Round",
            Gelu { .. } => "Gelu",
            Sin => "Sin",
            Cos => "Cos",
        }
    }

    /// The attributes for the printer (empty when there are none).
    pub fn attrs(self) -> String {
        match self {
            ElementwiseOp::IsInf { positive, negative } => {
                format!("positive={positive}, negative={negative}")
            }
            ElementwiseOp::Mod { fmod } => format!("fmod={fmod}"),
            ElementwiseOp::Gelu { tanh } => format!("tanh={tanh}"),
            _ => String::new(),
        }
    }

    /// Number of operands.
    pub fn arity(self) -> usize {
        use ElementwiseOp::*;
        match self {
            Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor | Mod { .. } => {
                2
            }
            Where => 3,
            _ => 1,
        }
    }

    /// The result type for these operand types, or why they do not fit.
    pub fn infer(self, inputs: &[&TensorType]) -> Result<TensorType, ShapeError> {
        use ElementwiseOp::*;
        let n = self.arity();
        if inputs.len() != n {
            return Err(ShapeError::Arity {
                expected: ["1", "2", "3"][n - 1],
                got: inputs.len(),
            });
        }
        let mut shape = inputs[0].shape.clone();
        for t in &inputs[1..] {
            shape = broadcast_shapes(&shape, &t.shape)?;
        }
        let mismatch = |what: String| Err(ShapeError::Mismatch(what));
        let dtype = match self {
            Equal | Less | Greater | LessOrEqual | GreaterOrEqual | Mod { .. } => {
                if inputs[0].dtype != inputs[1].dtype {
                    return mismatch(format!(
                        "operand types differ: {} and {}",
                        inputs[0].dtype, inputs[1].dtype
                    ));
                }
                if matches!(self, Mod { .. }) {
                    inputs[0].dtype
                } else {
                    DType::Bool
                }
            }
            And | Or | Xor | Not => {
                if let Some(t) = inputs.iter().find(|t| t.dtype != DType::Bool) {
                    return mismatch(format!("operands must be bool, got {}", t.dtype));
                }
                DType::Bool
            }
            Where => {
                if inputs[0].dtype != DType::Bool {
                    return mismatch(format!("condition must be bool, got {}", inputs[0].dtype));
                }
                if inputs[1].dtype != inputs[2].dtype {
                    return mismatch(format!(
                        "X and Y types differ: {} and {}",
                        inputs[1].dtype, inputs[2].dtype
                    ));
                }
                inputs[1].dtype
            }
            IsNaN | IsInf { .. } => DType::Bool,
            Sign | Floor | Ceil | Round | Gelu { .. } | Sin | Cos => inputs[0].dtype,
        };
        Ok(TensorType { dtype, shape })
    }
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// One element of a one- or two-operand operator (`b` is ignored by one-operand operators).
/// `integer` says the operands are integers (Mod by zero gives 0 then, rather than NaN).
pub fn scalar(op: ElementwiseOp, a: f64, b: f64, integer: bool) -> f64 {
    use ElementwiseOp::*;
    match op {
        Equal => truth(a == b),
        Less => truth(a < b),
        Greater => truth(a > b),
        LessOrEqual => truth(a <= b),
        GreaterOrEqual => truth(a >= b),
        And => truth(a != 0.0 && b != 0.0),
        Or => truth(a != 0.0 || b != 0.0),
        Xor => truth((a != 0.0) != (b != 0.0)),
        Not => truth(a == 0.0),
        IsNaN => truth(a.is_nan()),
        IsInf { positive, negative } => {
            truth((positive && a == f64::INFINITY) || (negative && a == f64::NEG_INFINITY))
        }
        Mod { .. } if integer && b == 0.0 => 0.0,
        // Rust's `%` is the truncated remainder (C fmod).
        Mod { fmod: true } => a % b,
        Mod { fmod: false } => {
            let r = a % b;
            if r != 0.0 && (r < 0.0) != (b < 0.0) {
                r + b
            } else {
                r
            }
        }
        Sign => {
            if a > 0.0 {
                1.0
            } else if a < 0.0 {
                -1.0
            } else {
                a
            }
        }
        Floor => a.floor(),
        Ceil => a.ceil(),
        Round => a.round_ties_even(),
        Gelu { tanh: false } => 0.5 * a * (1.0 + libm::erf(a / std::f64::consts::SQRT_2)),
        Gelu { tanh: true } => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())
        }
        Sin => a.sin(),
        Cos => a.cos(),
        Where => f64::NAN,
    }
}

fn broadcast_view<'a>(a: &'a ArrayD<f64>, shape: &[usize]) -> Result<ArrayViewD<'a, f64>, String> {
    a.broadcast(IxDyn(shape))
        .ok_or_else(|| "broadcast failed".to_string())
}

/// Evaluates `op` on its operands (results not yet rounded to their dtype).
pub fn eval(
    op: ElementwiseOp,
    args: &[&ArrayD<f64>],
    types: &[DType],
) -> Result<ArrayD<f64>, String> {
    let integer = types.iter().all(|t| t.is_integer());
    let mut shape = args[0].shape().to_vec();
    for a in &args[1..] {
        shape = broadcast_shapes(&shape, a.shape()).map_err(|e| e.to_string())?;
    }
    let view = |a| broadcast_view(a, &shape);
    Ok(match (op, args) {
        (ElementwiseOp::Where, [c, x, y]) => Zip::from(&view(c)?)
            .and(&view(x)?)
            .and(&view(y)?)
            .map_collect(|&c, &x, &y| if c != 0.0 { x } else { y }),
        (_, [a, b]) => Zip::from(&view(a)?)
            .and(&view(b)?)
            .map_collect(|&a, &b| scalar(op, a, b, integer)),
        (_, [a]) => a.mapv(|a| scalar(op, a, 0.0, integer)),
        _ => return Err(format!("{} given {} operands", op.name(), args.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ElementwiseOp::*;

    #[test]
    fn mod_sign_rules() {
        // fmod=0 takes the divisor's sign, fmod=1 the dividend's (ONNX Mod-10).
        assert_eq!(scalar(Mod { fmod: false }, -7.0, 3.0, true), 2.0);
        assert_eq!(scalar(Mod { fmod: false }, 7.0, -3.0, true), -2.0);
        assert_eq!(scalar(Mod { fmod: true }, -7.0, 3.0, true), -1.0);
        assert_eq!(scalar(Mod { fmod: true }, 7.0, -3.0, false), 1.0);
        assert_eq!(scalar(Mod { fmod: false }, 7.0, 0.0, true), 0.0);
    }

    #[test]
    fn rounding_and_predicates() {
        assert_eq!(scalar(Round, 2.5, 0.0, false), 2.0);
        assert_eq!(scalar(Round, -1.5, 0.0, false), -2.0);
        assert_eq!(scalar(Floor, -0.5, 0.0, false), -1.0);
        assert_eq!(scalar(Ceil, -0.5, 0.0, false), 0.0);
        assert_eq!(scalar(IsNaN, f64::NAN, 0.0, false), 1.0);
        let neg_only = IsInf {
            positive: false,
            negative: true,
        };
        assert_eq!(scalar(neg_only, f64::INFINITY, 0.0, false), 0.0);
        assert_eq!(scalar(neg_only, f64::NEG_INFINITY, 0.0, false), 1.0);
        assert_eq!(scalar(Xor, 1.0, 1.0, true), 0.0);
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let c = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![1.0, 0.0]).unwrap();
        let x = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0, 2.0]).unwrap();
        let y = ArrayD::from_elem(IxDyn(&[]), 9.0);
        let t = [DType::Bool, DType::F32, DType::F32];
        let r = eval(Where, &[&c, &x, &y], &t).unwrap();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [1.0, 2.0, 9.0, 9.0]);
        let bt = TensorType::new(DType::Bool, &[2, 1]);
        let ft = TensorType::new(DType::F32, &[2]);
        assert_eq!(Where.infer(&[&bt, &ft, &ft]).unwrap().shape, vec![2, 2]);
        assert!(Where.infer(&[&ft, &ft, &ft]).is_err());
    }
}
