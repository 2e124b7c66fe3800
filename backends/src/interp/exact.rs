//! The integer range of the engines' arithmetic.
//!
//! Engines compute on values decoded to `f64`, which holds every integer up to 2^53 and only
//! some beyond. The 8- to 32-bit integer types never leave that range (a result beyond it is
//! past their own range too, and the store saturates it correctly), but `i64` and `u64` can:
//! 2^53 + 1 decodes as 2^53. Integer-only instructions that compute on a 64-bit integer
//! therefore check here that every operand is exact and every result is within 2^53, and stop
//! with [`InterpError::InexactInteger`] instead of storing a rounded number. Moves are not
//! checked: they copy bytes, exact for every value. Instructions with a float operand round to
//! fp32 by definition and are not checked either.

use super::error::{Ctx, InterpError};
use super::exec::Store;
use super::memory::View;
use tessera_ir::{AluOp, DType, ReduceOp};

/// 2^53: every integer of at most this magnitude is exact in `f64`, and so is the sum,
/// difference, product or quotient of two of them when the result is within it.
pub(crate) const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// What an operation needs from its 64-bit integer operands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// Nothing: the operation reads only whether a value is zero (`and`, `or`, `xor`).
    Nothing,
    /// Values `f64` tells apart: comparisons, `max` and `min` (results are operands or 0/1).
    Exact,
    /// Arithmetic: operands and results within [`EXACT_LIMIT`].
    InRange,
}

/// What ALU operation `op` needs.
pub(crate) fn alu_need(op: AluOp) -> Need {
    match op {
        AluOp::Add | AluOp::Sub | AluOp::Mul | AluOp::Div | AluOp::Pow | AluOp::Mod => {
            Need::InRange
        }
        AluOp::Max
        | AluOp::Min
        | AluOp::Eq
        | AluOp::Ne
        | AluOp::Lt
        | AluOp::Le
        | AluOp::Gt
        | AluOp::Ge => Need::Exact,
        AluOp::And | AluOp::Or | AluOp::Xor => Need::Nothing,
    }
}

/// What reduction `op` needs.
pub(crate) fn reduce_need(op: ReduceOp) -> Need {
    match op {
        ReduceOp::Sum | ReduceOp::Prod => Need::InRange,
        ReduceOp::Max | ReduceOp::Min => Need::Exact,
    }
}

/// The 64-bit integer types, the ones whose values `f64` may not hold.
pub(crate) fn is_wide_int(d: DType) -> bool {
    matches!(d, DType::I64 | DType::U64)
}

/// Checks the elements of operand `view` of an integer-only instruction against `need`.
pub(crate) fn check_operand<S: Store>(
    mem: &S,
    ctx: Ctx<'_>,
    view: &View,
    need: Need,
) -> Result<(), InterpError> {
    if need == Need::Nothing || !is_wide_int(view.dtype) {
        return Ok(());
    }
    let bytes = mem.read_bytes(ctx, view)?;
    for word in bytes.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let v = if view.dtype == DType::U64 {
            i128::from(u64::from_le_bytes(b))
        } else {
            i128::from(i64::from_le_bytes(b))
        };
        let ok = match need {
            Need::InRange => v.unsigned_abs() <= 1 << 53,
            // Values that decode and store back unchanged: the f64 values, and i64::MAX and
            // u64::MAX, which decode to 2^63 and 2^64 and saturate back (a common sentinel).
            // Decoding is monotone and one-to-one on them, so comparisons stay exact.
            _ => {
                let mut back = [0u8; 8];
                view.dtype.encode(view.dtype.decode(word), &mut back);
                back == b
            }
        };
        if !ok {
            return Err(InterpError::InexactInteger {
                site: ctx.site(),
                role: view.role,
                detail: format!(
                    "holds the {} value {v}, which {}",
                    view.dtype,
                    if need == Need::InRange {
                        "is beyond 2^53, where the engines' f64 arithmetic stops being exact"
                    } else {
                        "f64 cannot hold exactly, so comparisons with it are not exact"
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Checks the results of an integer-only arithmetic step on 64-bit integers, about to be
/// stored in (or, inside `tensor_scalar`, passed on as) operand `role`. Non-finite results
/// (integer division by zero) are left to the store, which saturates them as for every integer.
pub(crate) fn check_results(
    ctx: Ctx<'_>,
    role: &'static str,
    values: &[f64],
) -> Result<(), InterpError> {
    match values
        .iter()
        .find(|v| v.is_finite() && v.abs() > EXACT_LIMIT)
    {
        Some(v) => Err(InterpError::InexactInteger {
            site: ctx.site(),
            role,
            detail: format!(
                "would receive the integer result {v}, beyond 2^53, where the engines' f64 \
                 arithmetic stops being exact"
            ),
        }),
        None => Ok(()),
    }
}
