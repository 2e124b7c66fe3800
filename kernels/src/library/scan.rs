//! `scan_rows`: running sums or products along each row of `x[rows, cols]` (CumSum, CumProd),
//! rows on partitions, whole rows resident in SBUF.
//!
//! A scan is sequential along the row, so it is one vector-engine instruction per column, each
//! combining the previous result column with the next input column across all partitions at
//! once. Integer inputs stay in integer tiles, where the engines' arithmetic is exact; float
//! inputs are scanned in f32 tiles, rounding each step as the hardware does. Scans over other
//! axes are the caller's job: move the axis last and view the tensor as a matrix.

use super::{blocks, check_shape, parts};
use crate::{KernelBuilder, KernelError, Tile};
use tessera_ir::graph::ScanKind;
use tessera_ir::{AluOp, DType, TargetSpec, TileProgram};

/// Longest row kept in SBUF (three tiles of this many 8-byte elements are 192 KiB).
pub const SCAN_RESIDENT_COLS: usize = 8192;

/// `x`[rows, cols] -> `y`[rows, cols] of `dtype`: the running `kind` of each row, leaving out
/// the element itself when `exclusive`, from the end when `reverse`.
pub fn scan_rows(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    kind: ScanKind,
    exclusive: bool,
    reverse: bool,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "scan_rows";
    check_shape(KERNEL, "x", &[rows, cols])?;
    if cols > SCAN_RESIDENT_COLS {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("rows of {cols} elements (at most {SCAN_RESIDENT_COLS})"),
        });
    }
    if dtype == DType::Bool {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: "bool tensors".into(),
        });
    }
    let op = match kind {
        ScanKind::Sum => AluOp::Add,
        ScanKind::Prod => AluOp::Mul,
    };
    let tile_dtype = if dtype.is_float() { DType::F32 } else { dtype };
    let mut kb = KernelBuilder::new(format!("scan_rows_{}", kind.name()), target);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    // Column k of the scan order.
    let order: Vec<usize> = if reverse {
        (0..cols).rev().collect()
    } else {
        (0..cols).collect()
    };
    for rb in blocks(rows, target.partitions as usize) {
        let p = parts(&rb);
        let col = |t: &Tile, c: usize| t.cols(0..p, c..c + 1);
        let xt = kb.sbuf("x", tile_dtype, p, &[cols])?;
        kb.dma_copy(&xt, x.rows(rb.clone()))?;
        let yt = kb.sbuf("y", tile_dtype, p, &[cols])?;
        if exclusive {
            kb.memset(col(&yt, order[0]), kind.identity())?;
            for k in 1..cols {
                let (prev, cur) = (order[k - 1], order[k]);
                kb.tensor_tensor(col(&yt, cur), col(&yt, prev), op, col(&xt, prev))?;
            }
        } else {
            kb.tensor_copy(col(&yt, order[0]), col(&xt, order[0]))?;
            for k in 1..cols {
                let (prev, cur) = (order[k - 1], order[k]);
                kb.tensor_tensor(col(&yt, cur), col(&yt, prev), op, col(&xt, cur))?;
            }
        }
        let out = if tile_dtype == dtype {
            yt
        } else {
            let ot = kb.sbuf("out", dtype, p, &[cols])?;
            kb.tensor_copy(&ot, &yt)?;
            kb.free(yt)?;
            ot
        };
        kb.dma_copy(y.rows(rb.clone()), &out)?;
        kb.free(xt)?;
        kb.free(out)?;
    }
    kb.finish()
}
