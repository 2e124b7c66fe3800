//! `unary`: `y = func(x)` element-wise on the activation engine.
//!
//! The tensor is contiguous, so the layout folds it onto all partitions (`[rows, cols]` plus a
//! short tail) and streams columns in chunks.

use super::layout::plan;
use super::{FREE_CHUNK, blocks, check_shape};
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
    let tile_rows = pieces.iter().map(|p| p.rows.min(p_max)).max().unwrap_or(1);
    let tile_cols = pieces
        .iter()
        .map(|p| p.cols.min(FREE_CHUNK))
        .max()
        .unwrap_or(1);

    let mut kb = KernelBuilder::new(format!("unary_{}", func.name()), target);
    let x = kb.input("x", dtype, shape)?;
    let y = kb.output("y", dtype, shape)?;
    let tx = kb.sbuf("x", dtype, tile_rows as u32, &[tile_cols])?;
    let ty = kb.sbuf("y", dtype, tile_rows as u32, &[tile_cols])?;
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                let view = |t: &crate::Tile| t.cols(0..rb.len() as u32, 0..cb.len());
                let (off, dims) = piece.ap(0, &rb, &cb);
                kb.dma_copy(view(&tx), x.ap(off, &dims))?;
                kb.act(view(&ty), view(&tx), func)?;
                let (off, dims) = piece.ap(1, &rb, &cb);
                kb.dma_copy(y.ap(off, &dims), view(&ty))?;
            }
        }
    }
    kb.finish()
}
