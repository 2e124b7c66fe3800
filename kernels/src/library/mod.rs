//! The kernel library: each kernel is a function from a target and shapes to a verified
//! [`tessera_ir::TileProgram`], written with [`crate::KernelBuilder`] the way a kernel author
//! would write it. Every kernel accepts any non-empty shape; the tiling adapts to sizes that are
//! not multiples of 128 (partitions) or 512 (matmul N).

mod layout;

pub mod arg_reduce;
pub mod binary;
pub mod layer_norm;
pub mod matmul;
pub mod movement;
pub mod reduce;
pub mod softmax;
pub mod transpose;
pub mod unary;

pub use arg_reduce::arg_reduce_rows;
pub use binary::binary;
pub use layer_norm::{layer_norm, layer_norm_chunked};
pub use matmul::{MatmulSpec, matmul, matmul_spec, matmul_t};
pub use movement::{cast, concat, permute};
pub use reduce::{reduce_rows, reduce_rows_chunked};
pub use softmax::{softmax, softmax_chunked};
pub use transpose::transpose2d;
pub use unary::unary;

use crate::KernelError;
use std::ops::Range;

/// Longest free extent an element-wise kernel keeps in one SBUF tile. Three f32 tiles of this
/// size are 24 KiB per partition, far inside SBUF, while still long enough for efficient DMA.
pub(crate) const FREE_CHUNK: usize = 2048;

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
        "c[m,n] = a[m,k] . b[k,n]; M,K tiled by 128, N by 512, K accumulated in PSUM (f32 or bf16 inputs)",
    ),
    (
        "binary",
        "element-wise a OP b with numpy broadcasting via stride-0 DMA views (any rank)",
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
        "transpose2d",
        "y[c,r] = x[r,c] in 128x128 blocks through the tensor engine's nc_transpose",
    ),
];
