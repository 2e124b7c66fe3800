//! Scalar semantics of the tile ISA: the one definition of every ALU operation, activation
//! function and reduction, on decoded `f64` values.
//!
//! The emulator applies these element by element; other backends (the Cranelift JIT) call or
//! mirror the same functions so the backends agree bit for bit. `exp`, `erf` and GELU are this
//! crate's own vectorisable definitions (`vmath`); the other transcendentals come from `libm`
//! rather than the platform's C library, so results never depend on the host.
//!
//! Precision (the rule of `tessera_ir::isa`): each function computes in `f64`; the caller rounds
//! the result to fp32 with [`round_step`] when the instruction has a float operand or
//! destination ([`float_math`]), and the store then rounds to the destination dtype.

use tessera_ir::{ActFunc, AluOp, DType, ReduceOp};

/// True when an instruction with operands and destination of these dtypes computes in fp32
/// (any of them is a float type); integer-only instructions stay exact.
pub fn float_math(dtypes: &[DType]) -> bool {
    dtypes.iter().any(|d| d.is_float())
}

/// Rounds one arithmetic step's result to fp32 when `float` (see [`float_math`]).
#[inline]
pub fn round_step(float: bool, x: f64) -> f64 {
    if float { x as f32 as f64 } else { x }
}

/// The truth value of an element for predicates and logical operations: non-zero (including
/// NaN) is true.
#[inline]
pub fn is_true(x: f64) -> bool {
    x != 0.0
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// `max(a, b)`, NaN if either is NaN; `+0` is taken as larger than `-0` so the result does not
/// depend on operand order.
#[inline]
pub fn max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b || (a == b && a.is_sign_positive()) {
        a
    } else {
        b
    }
}

/// `min(a, b)`, NaN if either is NaN; `-0` is taken as smaller than `+0`.
#[inline]
pub fn min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// Floored modulo: the result has the sign of `b` (Python's `%`, ONNX `Mod` with `fmod=0`).
/// `b == 0` gives NaN.
pub fn floored_mod(a: f64, b: f64) -> f64 {
    // `%` is the exact truncated remainder; shifting by one `b` when the signs differ makes it
    // floored. A zero remainder takes the sign of `b`, as Python does.
    let r = a % b;
    if r == 0.0 {
        0.0f64.copysign(b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// The binary ALU operation `a OP b` of `tensor_tensor` and `tensor_scalar`, unrounded.
pub fn alu(op: AluOp, a: f64, b: f64) -> f64 {
    match op {
        AluOp::Add => a + b,
        AluOp::Sub => a - b,
        AluOp::Mul => a * b,
        AluOp::Div => a / b,
        AluOp::Max => max(a, b),
        AluOp::Min => min(a, b),
        AluOp::Pow => libm::pow(a, b),
        AluOp::Mod => floored_mod(a, b),
        AluOp::Eq => bool_value(a == b),
        AluOp::Ne => bool_value(a != b),
        AluOp::Lt => bool_value(a < b),
        AluOp::Le => bool_value(a <= b),
        AluOp::Gt => bool_value(a > b),
        AluOp::Ge => bool_value(a >= b),
        AluOp::And => bool_value(is_true(a) && is_true(b)),
        AluOp::Or => bool_value(is_true(a) || is_true(b)),
        AluOp::Xor => bool_value(is_true(a) != is_true(b)),
    }
}

/// The logistic function `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

/// The activation function `func(x)`, unrounded. The engine's `x * scale + bias` is applied by
/// the caller before this.
#[inline]
pub fn activation(func: ActFunc, x: f64) -> f64 {
    match func {
        ActFunc::Identity => x,
        // NaN stays NaN rather than becoming 0.
        ActFunc::Relu => {
            if x > 0.0 || x.is_nan() {
                x
            } else {
                0.0
            }
        }
        ActFunc::Sigmoid => sigmoid(x),
        ActFunc::Tanh => libm::tanh(x),
        ActFunc::Gelu => super::vmath::gelu(x),
        ActFunc::GeluTanh => {
            // sqrt(2 / pi)
            let c = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
            0.5 * x * (1.0 + libm::tanh(c * (x + 0.044715 * x * x * x)))
        }
        ActFunc::Silu => x * sigmoid(x),
        ActFunc::Exp => super::vmath::exp(x),
        ActFunc::Log => libm::log(x),
        ActFunc::Sqrt => libm::sqrt(x),
        ActFunc::Rsqrt => 1.0 / libm::sqrt(x),
        ActFunc::Reciprocal => 1.0 / x,
        ActFunc::Square => x * x,
        ActFunc::Abs => x.abs(),
        ActFunc::Erf => super::vmath::erf(x),
        ActFunc::Sin => libm::sin(x),
        ActFunc::Cos => libm::cos(x),
        ActFunc::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                // 0, -0 and NaN
                0.0
            }
        }
    }
}

/// The starting value of a reduction (the result over zero elements).
pub fn reduce_identity(op: ReduceOp) -> f64 {
    match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    }
}

/// One step of a reduction: folds `x` into `acc`. NaN propagates through max and min.
#[inline]
pub fn reduce_step(op: ReduceOp, acc: f64, x: f64) -> f64 {
    match op {
        ReduceOp::Sum => acc + x,
        ReduceOp::Prod => acc * x,
        ReduceOp::Max => max(acc, x),
        ReduceOp::Min => min(acc, x),
    }
}

/// Reduces `values` in order, accumulating in `f64`; the caller rounds the result once
/// ([`round_step`]), as the tensor engine rounds a whole dot product once.
pub fn reduce(op: ReduceOp, values: &[f64]) -> f64 {
    values
        .iter()
        .fold(reduce_identity(op), |acc, &x| reduce_step(op, acc, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alu_by_hand() {
        assert_eq!(alu(AluOp::Sub, 2.0, 5.0), -3.0);
        assert_eq!(alu(AluOp::Div, 1.0, 4.0), 0.25);
        assert_eq!(alu(AluOp::Pow, 2.0, 10.0), 1024.0);
        // Floored modulo takes the divisor's sign: -7 mod 3 = 2, 7 mod -3 = -2.
        assert_eq!(alu(AluOp::Mod, -7.0, 3.0), 2.0);
        assert_eq!(alu(AluOp::Mod, 7.0, -3.0), -2.0);
        assert_eq!(alu(AluOp::Mod, 7.5, 2.0), 1.5);
        assert!(alu(AluOp::Mod, 1.0, 0.0).is_nan());
        assert!(alu(AluOp::Max, f64::NAN, 1.0).is_nan());
        assert!(alu(AluOp::Min, 1.0, f64::NAN).is_nan());
        assert_eq!(alu(AluOp::Max, -0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(alu(AluOp::Min, 0.0, -0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(alu(AluOp::Lt, 1.0, 2.0), 1.0);
        assert_eq!(alu(AluOp::Ge, 1.0, 2.0), 0.0);
        assert_eq!(alu(AluOp::Ne, f64::NAN, f64::NAN), 1.0);
        assert_eq!(alu(AluOp::Eq, f64::NAN, f64::NAN), 0.0);
        assert_eq!(alu(AluOp::And, 2.0, -1.0), 1.0);
        assert_eq!(alu(AluOp::And, 2.0, 0.0), 0.0);
        assert_eq!(alu(AluOp::Or, 0.0, 0.0), 0.0);
        assert_eq!(alu(AluOp::Xor, 3.0, 0.0), 1.0);
        assert_eq!(alu(AluOp::Xor, 3.0, 4.0), 0.0);
    }

    #[test]
    fn activations_by_hand() {
        assert_eq!(activation(ActFunc::Relu, -2.0), 0.0);
        assert_eq!(activation(ActFunc::Relu, 3.0), 3.0);
        assert_eq!(activation(ActFunc::Sigmoid, 0.0), 0.5);
        assert_eq!(activation(ActFunc::Tanh, 0.0), 0.0);
        assert_eq!(activation(ActFunc::Gelu, 0.0), 0.0);
        // gelu(x) -> x for large x, -> 0 for very negative x.
        assert_eq!(activation(ActFunc::Gelu, 10.0), 10.0);
        assert!(activation(ActFunc::Gelu, -10.0).abs() < 1e-20);
        assert!((activation(ActFunc::GeluTanh, 1.0) - 0.841_191_990_607).abs() < 1e-9);
        assert!((activation(ActFunc::Gelu, 1.0) - 0.841_344_746_068_543).abs() < 1e-12);
        assert_eq!(activation(ActFunc::Silu, 0.0), 0.0);
        assert_eq!(activation(ActFunc::Exp, 0.0), 1.0);
        assert_eq!(activation(ActFunc::Log, 1.0), 0.0);
        assert_eq!(activation(ActFunc::Sqrt, 9.0), 3.0);
        assert_eq!(activation(ActFunc::Rsqrt, 4.0), 0.5);
        assert_eq!(activation(ActFunc::Reciprocal, 8.0), 0.125);
        assert_eq!(activation(ActFunc::Square, -3.0), 9.0);
        assert_eq!(activation(ActFunc::Abs, -3.0), 3.0);
        assert_eq!(activation(ActFunc::Erf, 0.0), 0.0);
        assert_eq!(activation(ActFunc::Sign, -0.5), -1.0);
        assert_eq!(activation(ActFunc::Sign, f64::NAN), 0.0);
        assert_eq!(activation(ActFunc::Sin, 0.0), 0.0);
        assert_eq!(activation(ActFunc::Cos, 0.0), 1.0);
        assert!(activation(ActFunc::Log, -1.0).is_nan());
    }

    #[test]
    fn reductions_by_hand() {
        assert_eq!(reduce(ReduceOp::Sum, &[1.0, 2.0, 3.5]), 6.5);
        assert_eq!(reduce(ReduceOp::Prod, &[2.0, -3.0]), -6.0);
        assert_eq!(reduce(ReduceOp::Max, &[1.0, 7.0, -2.0]), 7.0);
        assert_eq!(reduce(ReduceOp::Min, &[1.0, 7.0, -2.0]), -2.0);
        assert!(reduce(ReduceOp::Max, &[1.0, f64::NAN, 9.0]).is_nan());
        assert_eq!(reduce(ReduceOp::Max, &[]), f64::NEG_INFINITY);
        assert!(float_math(&[DType::I32, DType::Bf16]));
        assert!(!float_math(&[DType::I32, DType::I8]));
        assert_eq!(round_step(true, 0.1), 0.1f32 as f64);
        assert_eq!(round_step(false, 0.1), 0.1);
    }
}
