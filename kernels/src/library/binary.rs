//! `binary`: `out = a OP b` element-wise with numpy broadcasting, on the vector engine.
//!
//! Broadcasting never expands data on the host: an operand's broadcast dimensions get stride 0
//! in its DMA view, so the DMA replicates it while loading (see [`super::layout`] for how the
//! iteration space is laid onto partitions).

use super::layout::{broadcast_shape, broadcast_strides, plan};
use super::{FREE_CHUNK, blocks, check_shape};
use crate::{KernelBuilder, KernelError};
use tessera_ir::{AluOp, DType, TargetSpec, TileProgram};

/// `a`[a_shape], `b`[b_shape] -> `out`[broadcast shape], all of `dtype`.
pub fn binary(
    target: &TargetSpec,
    op: AluOp,
    a_shape: &[usize],
    b_shape: &[usize],
    dtype: DType,
) -> Result<TileProgram, KernelError> {
    const KERNEL: &str = "binary";
    check_shape(KERNEL, "a", a_shape)?;
    check_shape(KERNEL, "b", b_shape)?;
    let out_shape = broadcast_shape(a_shape, b_shape).ok_or_else(|| KernelError::Unsupported {
        kernel: KERNEL,
        detail: format!("shapes {a_shape:?} and {b_shape:?} do not broadcast"),
    })?;
    let strides = [
        broadcast_strides(a_shape, &out_shape),
        broadcast_strides(b_shape, &out_shape),
        crate::view::row_major(&out_shape),
    ];
    let p_max = target.partitions as usize;
    let pieces = plan(&out_shape, &strides, p_max, FREE_CHUNK);
    let tile_rows = pieces.iter().map(|p| p.rows.min(p_max)).max().unwrap_or(1);
    let tile_cols = pieces
        .iter()
        .map(|p| p.cols.min(FREE_CHUNK))
        .max()
        .unwrap_or(1);

    let mut kb = KernelBuilder::new(format!("binary_{}", op.name()), target);
    let a = kb.input("a", dtype, a_shape)?;
    let b = kb.input("b", dtype, b_shape)?;
    let out = kb.output("out", dtype, &out_shape)?;
    // One set of tiles serves every block: sequential semantics make the reuse safe.
    let ta = kb.sbuf("a", dtype, tile_rows as u32, &[tile_cols])?;
    let tb = kb.sbuf("b", dtype, tile_rows as u32, &[tile_cols])?;
    let to = kb.sbuf("out", dtype, tile_rows as u32, &[tile_cols])?;
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                let view = |t: &crate::Tile| t.cols(0..rb.len() as u32, 0..cb.len());
                let (off, dims) = piece.ap(0, &rb, &cb);
                kb.dma_copy(view(&ta), a.ap(off, &dims))?;
                let (off, dims) = piece.ap(1, &rb, &cb);
                kb.dma_copy(view(&tb), b.ap(off, &dims))?;
                kb.tensor_tensor(view(&to), view(&ta), op, view(&tb))?;
                let (off, dims) = piece.ap(2, &rb, &cb);
                kb.dma_copy(out.ap(off, &dims), view(&to))?;
            }
        }
    }
    kb.finish()
}
