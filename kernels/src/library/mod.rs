//! The kernel library: each kernel is a function from a target and shapes to a verified
//! [`tessera_ir::TileProgram`], written with [`crate::KernelBuilder`] the way a kernel author
//! would write it. Every kernel accepts any non-empty shape; the tiling adapts to sizes that are
//! not multiples of 128 (partitions) or 512 (matmul N).

mod layout;

pub mod arg_reduce;
pub mod attention;
pub mod binary;
pub mod conv;
pub mod ewchain;
pub mod index;
pub mod layer_norm;
pub mod matmul;
pub mod movement;
pub mod pool;
pub mod reduce;
pub mod scan;
pub mod softmax;
pub mod strided;
pub mod transpose;
pub mod unary;

pub use arg_reduce::arg_reduce_rows;
pub use attention::{AttentionKernelSpec, attention};
pub use binary::binary;
pub use conv::{ConvKernelSpec, conv};
pub use ewchain::{EwChain, EwStep, Operand, ewchain};
pub use layer_norm::{layer_norm, layer_norm_chunked, rms_norm};
pub use matmul::{
    MatmulEpilogue, MatmulSpec, matmul, matmul_full_stripes, matmul_resident, matmul_spec, matmul_t,
};
pub use movement::{cast, concat, permute};
pub use pool::{PoolKernelSpec, PoolOp, pool};
pub use reduce::{reduce_rows, reduce_rows_chunked};
pub use scan::scan_rows;
pub use softmax::{softmax, softmax_chunked};
pub use strided::{axis_gather, tile};
pub use transpose::transpose2d;
pub use unary::unary;

use crate::KernelError;
use std::ops::Range;

/// Longest free extent an element-wise kernel keeps in one SBUF tile. Three f32 tiles of this
/// size are 24 KiB per partition, far inside SBUF, while still long enough for efficient DMA.
pub(crate) const FREE_CHUNK: usize = 2048;

/// At most this many blocks separate a store from the loads of its block in program order.
const STORE_DELAY_BLOCKS: usize = 4;

/// Per-partition SBUF bytes that tiles waiting for their deferred store may hold. Past that,
/// fewer blocks are deferred: tiles held for stores shrink the space the allocator rotates new
/// tiles through, and a new tile landing on recently used memory waits for its last reader.
const PENDING_STORE_BYTES: usize = 32 * 1024;

/// One DMA of a deferred store: the tile's partitions and where they go.
pub(crate) type StorePiece = (Range<u32>, crate::HbmView);

/// Result tiles whose stores are issued a few blocks late. A store waits for the compute that
/// produces its tile; issued right after that compute it would sit at the head of its DMA queue
/// and hold back the loads of later blocks that the round-robin dealt to the same queue. Issued
/// a few blocks later, its tile is (nearly) ready by the time the queue reaches
/// it, so loads keep streaming and several blocks' transfers share the DMA engines.
pub(crate) struct DeferredStores {
    pending: std::collections::VecDeque<(crate::Tile, Vec<StorePiece>)>,
    delay: usize,
}

impl DeferredStores {
    /// Deferred stores of tiles of `row_bytes` bytes per partition.
    pub fn new(row_bytes: usize) -> Self {
        DeferredStores {
            pending: Default::default(),
            delay: (PENDING_STORE_BYTES / row_bytes.max(1)).clamp(1, STORE_DELAY_BLOCKS),
        }
    }

    /// Queues `tile`'s store, one DMA per `(partitions, destination)` piece, issuing (and
    /// freeing) the oldest ones past the delay.
    pub fn push(
        &mut self,
        kb: &mut crate::KernelBuilder<'_>,
        tile: crate::Tile,
        pieces: Vec<StorePiece>,
    ) -> Result<(), KernelError> {
        self.pending.push_back((tile, pieces));
        while self.pending.len() > self.delay {
            self.issue_oldest(kb)?;
        }
        Ok(())
    }

    /// Issues every remaining store.
    pub fn flush(&mut self, kb: &mut crate::KernelBuilder<'_>) -> Result<(), KernelError> {
        while !self.pending.is_empty() {
            self.issue_oldest(kb)?;
        }
        Ok(())
    }

    fn issue_oldest(&mut self, kb: &mut crate::KernelBuilder<'_>) -> Result<(), KernelError> {
        if let Some((tile, pieces)) = self.pending.pop_front() {
            for (parts, dst) in pieces {
                kb.dma_copy(dst, tile.part(parts))?;
            }
            kb.free(tile)?;
        }
        Ok(())
    }
}

/// A transfer is split into at most this many DMAs by partition groups.
const DMA_SPLIT_MAX: usize = 4;

/// Smallest DMA, in bytes, worth splitting off. One transfer is served by one DMA engine
/// (about 27 GB/s), a tenth of the core's bandwidth: a small tensor moved by one or two DMAs
/// cannot reach the roofline however well it overlaps. Splitting by partition groups spreads it
/// over several queues, while pieces of at least this size keep the fixed start cost (~1.3 us)
/// small against the data time.
const DMA_SPLIT_MIN_BYTES: usize = 64 * 1024;

/// Partition groups for moving `partitions x row_bytes` bytes: 32-aligned groups (a valid start
/// for any group of at most 32 partitions) when the transfer is large enough to split.
pub(crate) fn dma_groups(partitions: u32, row_bytes: usize) -> Vec<Range<u32>> {
    let bytes = partitions as usize * row_bytes;
    let ways = (bytes / DMA_SPLIT_MIN_BYTES)
        .min(DMA_SPLIT_MAX)
        .min(partitions.div_ceil(32) as usize)
        .max(1);
    if ways == 1 {
        return std::iter::once(0..partitions).collect();
    }
    // Whole 32-partition groups per piece, as even as possible.
    let groups = partitions.div_ceil(32) as usize;
    (0..ways)
        .map(|i| {
            let lo = (i * groups / ways) as u32 * 32;
            let hi = (((i + 1) * groups / ways) as u32 * 32).min(partitions);
            lo..hi
        })
        .collect()
}

/// `0..n` in consecutive ranges of at most `size`.
pub(crate) fn blocks(n: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = size.max(1);
    (0..n.div_ceil(size)).map(move |i| i * size..((i + 1) * size).min(n))
}

/// Refuses empty shapes and shapes whose element count does not fit comfortably in memory
/// arithmetic (the builder refuses the tensors anyway; this gives the kernel's name).
pub(crate) fn check_shape(
    kernel: &'static str,
    what: &str,
    shape: &[usize],
) -> Result<(), KernelError> {
    let elems = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    match elems {
        Some(n) if n > 0 && n < 1 << 48 => Ok(()),
        _ => Err(KernelError::Unsupported {
            kernel,
            detail: format!("{what} shape {shape:?} is empty or too large"),
        }),
    }
}

/// The shape as `[rows, cols]` over its last axis; a scalar is one row of one element.
pub(crate) fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        Some((&c, lead)) => (lead.iter().product(), c),
    }
}

/// A partition count known to be at most the target's (<= 128), as the builder takes it.
pub(crate) fn parts(r: &Range<usize>) -> u32 {
    r.len() as u32
}

/// Every library kernel with a one-line description, for `tessera list-kernels` and docs.
pub const CATALOGUE: &[(&str, &str)] = &[
    (
        "matmul",
        "c[m,n] = a[m,k] . b[k,n]; A^T resident in SBUF in stripes of up to 8x128 rows, B streamed, N=512 per PSUM bank, K accumulated in PSUM (f32, bf16 or f16 inputs)",
    ),
    (
        "binary",
        "element-wise a OP b with numpy broadcasting via stride-0 DMA views (any rank)",
    ),
    (
        "ewchain",
        "a few vector/activation steps over 1-3 broadcast inputs (predicates, select, floor, ...)",
    ),
    (
        "unary",
        "element-wise activation func(x) on the scalar engine",
    ),
    (
        "softmax",
        "softmax over the last axis; one pass in SBUF, two passes with online max for long rows",
    ),
    (
        "layer_norm",
        "layer normalisation over the last axis with gamma and beta (eps configurable)",
    ),
    (
        "reduce_rows",
        "one value per row (sum/mean/max/min/prod/L1/L2/log-sum/log-sum-exp/sum-of-squares), chunked rows combined",
    ),
    (
        "arg_reduce_rows",
        "int64 index of each row's max/min (first or last tie) from reduce, Eq mask, iota and select",
    ),
    (
        "axis_gather",
        "slice/expand/pad: per-axis index maps as runs of constant stride, one strided DMA per piece, fill from a one-element tensor",
    ),
    (
        "tile",
        "y = tile(x, repeats) as one DMA pattern over the interleaved [repeat, axis] index space",
    ),
    (
        "conv",
        "N-D convolution on the tensor engine: channels on partitions, zero-padded input blocks in SBUF, one nc_matmul per kernel tap and 128-channel chunk accumulated in PSUM (strided/dilated window views as the moving operand)",
    ),
    (
        "pool",
        "max / sum / Lp-sum pooling over up to 3 spatial axes: rows on partitions, padded input block in SBUF, one DVE/POOL instruction per window tap over a strided view (averages scaled by a per-position 1/count map)",
    ),
    (
        "index_keys",
        "f32 row-major position of each int index tuple (negative coordinates wrapped, -1 when out of range)",
    ),
    (
        "strided_copy",
        "HBM-to-HBM DMAs over any number of (size, src stride, dst stride) dims; stride 0 broadcasts",
    ),
    (
        "select_reduce",
        "per row, select the candidates whose key matches (iota or a key tensor) and reduce them: gather, or scatter none/add/mul/max/min onto a base",
    ),
    (
        "onehot_matmul",
        "rows of a finite float table picked by f32 keys: an on-chip one-hot block (iota == key) times the table on the tensor engine, PSUM accumulating over 128-row blocks",
    ),
    (
        "topk_rows",
        "k largest/smallest of each row with int64 indices (ties: lower index first), k rounds of reduce, first match, mask",
    ),
    (
        "scan_rows",
        "running sum or product along each row (CumSum/CumProd), one vector-engine step per column, exact on integers",
    ),
    (
        "transpose2d",
        "y[c,r] = x[r,c] in 128x128 blocks through the tensor engine's nc_transpose",
    ),
];
