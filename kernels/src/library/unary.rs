//! `unary`: `y = func(x)` element-wise on the activation engine.
//!
//! The tensor is contiguous, so the layout folds it onto all partitions (`[rows, cols]` plus a
//! short tail) and streams columns in chunks.

use super::layout::plan;
use super::{DeferredStores, FREE_CHUNK, blocks, check_shape};
use crate::{KernelBuilder, KernelError};
use tessera_ir::{ActFunc, DType, TargetSpec, TileProgram};

/// `x`[shape] -> `y`[shape], both of `dtype`.
pub fn unary(
    target: &TargetSpec,
    func: ActFunc,
    shape: &[usize],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    check_shape("unary", "x", shape)?;
    let strides = crate::view::row_major(shape);
    let p_max = target.partitions as usize;
    let pieces = plan(shape, &[strides.clone(), strides], p_max, FREE_CHUNK);
    let mut kb = KernelBuilder::new(format!("unary_{}", func.name()), target);
    let x = kb.input("x", dtype, shape)?;
    let y = kb.output("y", dtype, shape)?;
    let mut stores = DeferredStores::default();
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                // Fresh tiles per block, stores deferred: see `DeferredStores`.
                let (p, w) = (rb.len() as u32, cb.len());
                let tx = kb.sbuf("x", dtype, p, &[w])?;
                let (off, dims) = piece.ap(0, &rb, &cb);
                kb.dma_copy(&tx, x.ap(off, &dims))?;
                let ty = kb.sbuf("y", dtype, p, &[w])?;
                kb.act(&ty, &tx, func)?;
                kb.free(tx)?;
                let (off, dims) = piece.ap(1, &rb, &cb);
                stores.push(&mut kb, ty, y.ap(off, &dims))?;
            }
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}
