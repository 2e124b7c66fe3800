//! `transpose2d`: `y[c, r] = x[r, c]` in 128 x 128 blocks through the tensor engine.
//!
//! Each block is loaded to SBUF, transposed by `nc_transpose` into PSUM (f32, which holds every
//! float dtype exactly), copied back to SBUF in the tensor's dtype and stored at the mirrored
//! block of `y`.

use super::{blocks, check_shape, parts};
use crate::{KernelBuilder, KernelError};
use tessera_ir::{DType, TargetSpec, TileProgram};

/// `x`[rows, cols] -> `y`[cols, rows], for float dtypes (the tensor engine moves floats).
pub fn transpose2d(
    target: &TargetSpec,
    rows: usize,
    cols: usize,
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "transpose2d";
    check_shape(KERNEL, "x", &[rows, cols])?;
    if !dtype.is_float() {
        return Err(KernelError::Unsupported {
            kernel: KERNEL,
            detail: format!("dtype {dtype}; nc_transpose moves float data"),
        });
    }
    let block = target.transpose_max as usize;
    let mut kb = KernelBuilder::new(format!("transpose2d_{rows}x{cols}"), target);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[cols, rows])?;
    for rb in blocks(rows, block) {
        for cb in blocks(cols, block) {
            let tile = kb.sbuf("x", dtype, parts(&rb), &[cb.len()])?;
            kb.dma_copy(&tile, x.block(rb.clone(), cb.clone()))?;
            let flipped = kb.psum("x_t", DType::F32, parts(&cb), &[rb.len()])?;
            kb.nc_transpose(&flipped, &tile)?;
            kb.free(tile)?;
            let out = kb.sbuf("y", dtype, parts(&cb), &[rb.len()])?;
            kb.tensor_copy(&out, &flipped)?;
            kb.free(flipped)?;
            kb.dma_copy(y.block(cb.clone(), rb.clone()), &out)?;
            kb.free(out)?;
        }
    }
    kb.finish()
}
