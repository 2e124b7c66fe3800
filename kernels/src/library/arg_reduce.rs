//! `arg_reduce_rows`: the index of the largest (or smallest) element of each row of
//! `x[rows, cols]`, as int64, rows on partitions, whole rows resident in SBUF.
//!
//! No instruction returns an index, so it is built from ones that exist: the row extreme
//! (`tensor_reduce`), a 0/1 mask of the elements equal to it (`tensor_scalar` with `Eq`), the
//! column numbers (`iota`), and a `select` that keeps the numbers of the masked columns and puts
//! `cols` (first index wanted, then a min-reduce) or -1 (last index wanted, then a max-reduce)
//! elsewhere. Indices below 2^24 are exact in the f32 tiles.

use super::{blocks, check_shape, parts};
use crate::{KernelBuilder, KernelError};
use tessera_ir::{AffineExpr, AluOp, DType, ReduceOp, TargetSpec, TileProgram};

/// Longest row kept in SBUF (five f32 tiles of this size are 160 KiB per partition at most).
pub const ARG_RESIDENT_COLS: usize = 8192;

/// `x`[rows, cols] -> `y`[rows, 1] (int64): argmax (`max`) or argmin per row; `last` picks the
/// last of equal extremes instead of the first.
pub fn arg_reduce_rows(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    max: bool,
    last: bool,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    check_shape("arg_reduce_rows", "x", &[rows, cols])?;
    if cols > ARG_RESIDENT_COLS {
        return Err(KernelError::Unsupported {
            kernel: "arg_reduce_rows",
            detail: format!("rows of {cols} elements (at most {ARG_RESIDENT_COLS})"),
        });
    }
    let mut kb = KernelBuilder::new("arg_reduce_rows", target);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", DType::I64, &[rows, 1])?;
    let extreme = if max { ReduceOp::Max } else { ReduceOp::Min };
    let (fill, pick) = if last {
        (-1.0, ReduceOp::Max)
    } else {
        (cols as f64, ReduceOp::Min)
    };
    for rb in blocks(rows, target.partitions as usize) {
        let p = parts(&rb);
        let xt = kb.sbuf("x", DType::F32, p, &[cols])?;
        kb.dma_copy(&xt, x.rows(rb.clone()))?;
        let m = kb.sbuf("extreme", DType::F32, p, &[1])?;
        kb.tensor_reduce(&m, &xt, extreme, 1)?;
        let mask = kb.sbuf("mask", DType::F32, p, &[cols])?;
        kb.tensor_scalar(&mask, &xt, AluOp::Eq, &m)?;
        let idx = kb.sbuf("idx", DType::F32, p, &[cols])?;
        kb.iota(
            &idx,
            AffineExpr {
                base: 0,
                partition: 0,
                free: vec![1],
            },
        )?;
        let other = kb.sbuf("other", DType::F32, p, &[cols])?;
        kb.memset(&other, fill)?;
        let cand = kb.sbuf("cand", DType::F32, p, &[cols])?;
        kb.select(&cand, &mask, &idx, &other)?;
        let best = kb.sbuf("best", DType::F32, p, &[1])?;
        kb.tensor_reduce(&best, &cand, pick, 1)?;
        let yt = kb.sbuf("y", DType::I64, p, &[1])?;
        kb.tensor_copy(&yt, &best)?;
        kb.dma_copy(y.rows(rb.clone()), &yt)?;
        for t in [xt, m, mask, idx, other, cand, best, yt] {
            kb.free(t)?;
        }
    }
    kb.finish()
}
