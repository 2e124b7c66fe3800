//! `binary`: `out = a OP b` element-wise with numpy broadcasting, on the vector engine.
//!
//! Broadcasting never expands data on the host: an operand's broadcast dimensions get stride 0
//! in its DMA view, so the DMA replicates it while loading (see [`super::layout`] for how the
//! iteration space is laid onto partitions).

use super::layout::{broadcast_shape, broadcast_strides, plan};
use super::{DeferredStores, FREE_CHUNK, blocks, check_shape, dma_groups};
use crate::{KernelBuilder, KernelError};
use std::ops::Range;
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
    let mut kb = KernelBuilder::new(format!("binary_{}", op.name()), target);
    let a = kb.input("a", dtype, a_shape)?;
    let b = kb.input("b", dtype, b_shape)?;
    let out = kb.output("out", dtype, &out_shape)?;
    let tile_cols = pieces.iter().map(|p| p.cols.min(FREE_CHUNK)).max();
    let mut stores = DeferredStores::new(tile_cols.unwrap_or(1) * dtype.size_bytes());
    for piece in &pieces {
        for rb in blocks(piece.rows, p_max) {
            for cb in blocks(piece.cols, FREE_CHUNK) {
                // Fresh tiles per block (see `DeferredStores`): the allocator rotates them
                // through SBUF, so the next blocks' loads overlap this block's work.
                let (p, w) = (rb.len() as u32, cb.len());
                let ta = kb.sbuf("a", dtype, p, &[w])?;
                let tb = kb.sbuf("b", dtype, p, &[w])?;
                let groups = dma_groups(p, w * dtype.size_bytes());
                let rows = |g: &Range<u32>| rb.start + g.start as usize..rb.start + g.end as usize;
                for g in &groups {
                    let (off, dims) = piece.ap(0, &rows(g), &cb);
                    kb.dma_copy(ta.part(g.clone()), a.ap(off, &dims))?;
                    let (off, dims) = piece.ap(1, &rows(g), &cb);
                    kb.dma_copy(tb.part(g.clone()), b.ap(off, &dims))?;
                }
                let to = kb.sbuf("out", dtype, p, &[w])?;
                kb.tensor_tensor(&to, &ta, op, &tb)?;
                kb.free(ta)?;
                kb.free(tb)?;
                let dsts = groups
                    .iter()
                    .map(|g| {
                        let (off, dims) = piece.ap(2, &rows(g), &cb);
                        (g.clone(), out.ap(off, &dims))
                    })
                    .collect();
                stores.push(&mut kb, to, dsts)?;
            }
        }
    }
    stores.flush(&mut kb)?;
    kb.finish()
}
