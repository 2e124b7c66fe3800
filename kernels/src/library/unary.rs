//! `unary`: `y = func(x)` element-wise on the activation engine.
//!
//! The tensor is contiguous, so the layout folds it onto all partitions (`[rows, cols]` plus a
//! short tail) and streams columns in chunks.

use super::layout::plan;
use super::{DeferredStores, FREE_CHUNK, blocks, check_shape, dma_groups};
use crate::{KernelBuilder, KernelError};
use std::ops::Range;
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
    let tile_cols = pieces.iter().map(|p| p.cols.min(FREE_CHUNK)).max();
    let mut stores = DeferredStores::new(tile_cols.unwrap_or(1) * dtype.size_bytes());
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                // Fresh tiles per block, stores deferred: see `DeferredStores`.
                let (p, w) = (rb.len() as u32, cb.len());
                let tx = kb.sbuf("x", dtype, p, &[w])?;
                let groups = dma_groups(p, w * dtype.size_bytes());
                let rows = |g: &Range<u32>| rb.start + g.start as usize..rb.start + g.end as usize;
                for g in &groups {
                    let (off, dims) = piece.ap(0, &rows(g), &cb);
                    kb.dma_copy(tx.part(g.clone()), x.ap(off, &dims))?;
                }
                let ty = kb.sbuf("y", dtype, p, &[w])?;
                kb.act(&ty, &tx, func)?;
                kb.free(tx)?;
                let dsts = groups
                    .iter()
                    .map(|g| {
                        let (off, dims) = piece.ap(1, &rows(g), &cb);
                        (g.clone(), y.ap(off, &dims))
                    })
                    .collect();
                stores.push(&mut kb, ty, dsts)?;
            }
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}
