//! Handles and views: [`Tensor`] (an HBM tensor), [`Tile`] (an SBUF or PSUM buffer) and the
//! views an instruction operates on ([`HbmView`], [`TileView`]).
//!
//! Every handle remembers which builder made it, so mixing kernels is an error rather than a
//! silently wrong program. Views are cheap values; a malformed one (a range outside its buffer,
//! a size that does not fit) is not a panic: it carries the problem, and the builder reports it
//! as [`crate::KernelError::BadOperand`] when the view is used.

use std::ops::Range;
use tessera_ir::{BufId, DType, Dim, HbmAccess, Space, TensorId, TileAccess};

/// Row-major strides of `shape`, in elements.
pub(crate) fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1] as i64);
    }
    strides
}

fn size_u32(n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("size {n} does not fit an access pattern dimension"))
}

/// `row * cols + col` without overflow: an out-of-range view is reported, not a panic.
fn flat(row: usize, cols: usize, col: usize) -> u64 {
    (row as u64)
        .saturating_mul(cols as u64)
        .saturating_add(col as u64)
}

fn dims_of(dims: &[(i64, u32)]) -> Vec<Dim> {
    dims.iter()
        .map(|&(stride, size)| Dim::new(stride, size))
        .collect()
}

/// A tensor in HBM: an input, output or scratch of the kernel.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) owner: u64,
    pub(crate) id: TensorId,
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
}

/// A view of an HBM tensor, one end of a `dma_copy`.
#[derive(Clone, Debug)]
pub struct HbmView {
    pub(crate) owner: u64,
    pub(crate) name: String,
    pub(crate) access: HbmAccess,
    pub(crate) problem: Option<String>,
}

impl HbmView {
    /// The access pattern.
    pub fn access(&self) -> &HbmAccess {
        &self.access
    }
}

impl Tensor {
    /// Its id in the program.
    pub fn id(&self) -> TensorId {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The tensor seen as a matrix: all leading dimensions are rows, the last one columns (a
    /// 1-D tensor is one row, a scalar one element).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.split_last() {
            None => (1, 1),
            Some((&cols, lead)) => (lead.iter().product(), cols),
        }
    }

    fn view(&self, offset: u64, dims: Result<Vec<Dim>, String>) -> HbmView {
        let (dims, problem) = match dims {
            Ok(d) => (d, None),
            Err(e) => (Vec::new(), Some(format!("view of @{}: {e}", self.name))),
        };
        HbmView {
            owner: self.owner,
            name: self.name.clone(),
            access: HbmAccess {
                tensor: self.id,
                offset,
                dims,
            },
            problem,
        }
    }

    fn check_block(&self, rows: &Range<usize>, cols: &Range<usize>) -> Result<(u32, u32), String> {
        let (r, c) = self.rows_cols();
        if rows.start >= rows.end || rows.end > r || cols.start >= cols.end || cols.end > c {
            return Err(format!(
                "block rows {rows:?} x cols {cols:?} is empty or outside {r} x {c}"
            ));
        }
        Ok((
            size_u32(rows.end - rows.start)?,
            size_u32(cols.end - cols.start)?,
        ))
    }

    /// Rows `rows` and columns `cols` of the matrix view ([`Tensor::rows_cols`]); the first
    /// dimension walks partitions when the other end is a tile.
    pub fn block(&self, rows: Range<usize>, cols: Range<usize>) -> HbmView {
        let c = self.rows_cols().1;
        let dims = self
            .check_block(&rows, &cols)
            .map(|(nr, nc)| dims_of(&[(c as i64, nr), (1, nc)]));
        self.view(flat(rows.start, c, cols.start), dims)
    }

    /// Whole rows `rows` of the matrix view.
    pub fn rows(&self, rows: Range<usize>) -> HbmView {
        let c = self.rows_cols().1;
        self.block(rows, 0..c)
    }

    /// Every element, as `[rows, cols]` of the matrix view.
    pub fn all(&self) -> HbmView {
        let r = self.rows_cols().0;
        self.rows(0..r)
    }

    /// The transpose of a block: element `(j, i)` is `x[rows.start + i, cols.start + j]`, so the
    /// columns walk partitions. This is how a strided DMA loads `A^T` for `nc_matmul`.
    pub fn block_t(&self, rows: Range<usize>, cols: Range<usize>) -> HbmView {
        let c = self.rows_cols().1;
        let dims = self
            .check_block(&rows, &cols)
            .map(|(nr, nc)| dims_of(&[(1, nc), (c as i64, nr)]));
        self.view(flat(rows.start, c, cols.start), dims)
    }

    /// Columns `cols` of row `row`, repeated on `partitions` partitions (stride 0 on the first
    /// dimension): how a row vector such as layer-norm gamma reaches every partition.
    pub fn bcast_row(&self, partitions: u32, row: usize, cols: Range<usize>) -> HbmView {
        let c = self.rows_cols().1;
        let dims = self
            .check_block(&(row..row.saturating_add(1)), &cols)
            .and_then(|(_, nc)| {
                if partitions == 0 {
                    Err("broadcast to 0 partitions".to_string())
                } else {
                    Ok(dims_of(&[(0, partitions), (1, nc)]))
                }
            });
        self.view(flat(row, c, cols.start), dims)
    }

    /// The general access pattern: element `offset + sum(i_k * stride_k)` for `(stride, size)`
    /// dimensions, outermost first. Bounds are checked when the view is used.
    pub fn ap(&self, offset: u64, dims: &[(i64, u32)]) -> HbmView {
        self.view(offset, Ok(dims_of(dims)))
    }
}

/// An SBUF or PSUM buffer allocated by [`crate::KernelBuilder::sbuf`] or
/// [`crate::KernelBuilder::psum`]. Not `Clone`: [`crate::KernelBuilder::free`] consumes it.
#[derive(Debug)]
pub struct Tile {
    pub(crate) owner: u64,
    pub(crate) buf: BufId,
    pub(crate) name: String,
    pub(crate) space: Space,
    pub(crate) dtype: DType,
    pub(crate) partitions: u32,
    pub(crate) free_shape: Vec<usize>,
}

/// A view of a tile: a partition range and a free-dimension access pattern. Element-wise
/// instructions take any views whose partition counts and free element counts agree.
#[derive(Clone, Debug)]
pub struct TileView {
    pub(crate) owner: u64,
    pub(crate) name: String,
    pub(crate) access: TileAccess,
    pub(crate) problem: Option<String>,
}

impl TileView {
    /// The access pattern.
    pub fn access(&self) -> &TileAccess {
        &self.access
    }

    /// Partitions viewed.
    pub fn partitions(&self) -> u32 {
        self.access.partitions
    }

    /// Free elements per partition.
    pub fn free_elems(&self) -> u64 {
        self.access.free_elems()
    }
}

impl Tile {
    /// Its id in the program.
    pub fn id(&self) -> BufId {
        self.buf
    }

    /// Its unique name (`acc`, `acc.1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SBUF or PSUM.
    pub fn space(&self) -> Space {
        self.space
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Partitions allocated.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Free shape of one partition.
    pub fn free_shape(&self) -> &[usize] {
        &self.free_shape
    }

    fn make(&self, parts: Range<u32>, offset: u64, dims: Result<Vec<Dim>, String>) -> TileView {
        let mut problem = dims.as_ref().err().cloned();
        if parts.start >= parts.end || parts.end > self.partitions {
            problem = Some(format!(
                "partitions {parts:?} outside the buffer's 0..{}",
                self.partitions
            ));
        }
        TileView {
            owner: self.owner,
            name: self.name.clone(),
            access: TileAccess {
                buf: self.buf,
                start_partition: parts.start,
                partitions: parts.end.saturating_sub(parts.start),
                offset,
                dims: dims.unwrap_or_default(),
            },
            problem: problem.map(|p| format!("view of %{}: {p}", self.name)),
        }
    }

    /// Every element of the buffer.
    pub fn all(&self) -> TileView {
        self.part(0..self.partitions)
    }

    /// Partitions `parts`, every free element.
    pub fn part(&self, parts: Range<u32>) -> TileView {
        self.view(parts, &[])
    }

    /// Partitions `parts` and, per free dimension, a range of indices (missing trailing ranges
    /// mean the whole dimension). Strides follow the buffer's row-major free shape.
    pub fn view(&self, parts: Range<u32>, free: &[Range<usize>]) -> TileView {
        let strides = row_major(&self.free_shape);
        let mut offset = 0u64;
        let dims = (|| {
            if free.len() > self.free_shape.len() {
                return Err(format!(
                    "{} free ranges for a buffer with {} free dimensions",
                    free.len(),
                    self.free_shape.len()
                ));
            }
            let mut dims = Vec::with_capacity(self.free_shape.len());
            for (k, (&size, &stride)) in self.free_shape.iter().zip(&strides).enumerate() {
                let r = free.get(k).cloned().unwrap_or(0..size);
                if r.start >= r.end || r.end > size {
                    return Err(format!(
                        "free range {r:?} of dimension {k} outside 0..{size}"
                    ));
                }
                offset += r.start as u64 * stride as u64;
                dims.push(Dim::new(stride, size_u32(r.end - r.start)?));
            }
            Ok(dims)
        })();
        self.make(parts, offset, dims)
    }

    /// Partitions `parts` and the free elements `cols` in flat (row-major) order, as one
    /// contiguous dimension: for a one-dimensional free shape, a range of columns.
    pub fn cols(&self, parts: Range<u32>, cols: Range<usize>) -> TileView {
        let total: usize = self.free_shape.iter().product();
        let dims = if cols.start >= cols.end || cols.end > total {
            Err(format!("free elements {cols:?} outside 0..{total}"))
        } else {
            size_u32(cols.end - cols.start).map(|n| vec![Dim::new(1, n)])
        };
        self.make(parts, cols.start as u64, dims)
    }

    /// `[P, 1]`: the element at flat free index `index` of each partition in `parts`, e.g. a
    /// per-partition scalar operand.
    pub fn col(&self, parts: Range<u32>, index: usize) -> TileView {
        self.ap(parts, index as u64, &[(1, 1)])
    }

    /// `[P, n]`: the element at flat free index `index` repeated `n` times (stride 0), to
    /// broadcast a column along the free dimension. Read-only.
    pub fn bcast_col(&self, parts: Range<u32>, index: usize, n: u32) -> TileView {
        self.ap(parts, index as u64, &[(0, n)])
    }

    /// Every free element with the free dimensions reordered: dimension `k` of the view is
    /// dimension `perm[k]` of the buffer.
    pub fn permuted(&self, parts: Range<u32>, perm: &[usize]) -> TileView {
        let strides = row_major(&self.free_shape);
        let mut seen = vec![false; self.free_shape.len()];
        let dims = (|| {
            if perm.len() != self.free_shape.len() {
                return Err(format!(
                    "permutation {perm:?} of {} dimensions",
                    self.free_shape.len()
                ));
            }
            perm.iter()
                .map(|&k| match seen.get_mut(k) {
                    Some(s) if !*s => {
                        *s = true;
                        Ok(Dim::new(strides[k], size_u32(self.free_shape[k])?))
                    }
                    _ => Err(format!("{perm:?} is not a permutation")),
                })
                .collect()
        })();
        self.make(parts, 0, dims)
    }

    /// A two-dimensional free shape `[a, b]` read as `[b, a]`.
    pub fn transposed(&self, parts: Range<u32>) -> TileView {
        self.permuted(parts, &[1, 0])
    }

    /// The general access pattern within each partition of `parts`: element
    /// `offset + sum(i_k * stride_k)`. Bounds are checked when the view is used.
    pub fn ap(&self, parts: Range<u32>, offset: u64, dims: &[(i64, u32)]) -> TileView {
        self.make(parts, offset, Ok(dims_of(dims)))
    }
}

impl From<&Tile> for TileView {
    fn from(t: &Tile) -> Self {
        t.all()
    }
}

impl From<&TileView> for TileView {
    fn from(v: &TileView) -> Self {
        v.clone()
    }
}

/// One end of a `dma_copy`: an HBM view or an SBUF view.
#[derive(Clone, Debug)]
pub enum DmaEnd {
    /// HBM.
    Hbm(HbmView),
    /// SBUF.
    Tile(TileView),
}

impl From<HbmView> for DmaEnd {
    fn from(v: HbmView) -> Self {
        DmaEnd::Hbm(v)
    }
}

impl From<&HbmView> for DmaEnd {
    fn from(v: &HbmView) -> Self {
        DmaEnd::Hbm(v.clone())
    }
}

impl From<&Tensor> for DmaEnd {
    fn from(t: &Tensor) -> Self {
        DmaEnd::Hbm(t.all())
    }
}

impl From<TileView> for DmaEnd {
    fn from(v: TileView) -> Self {
        DmaEnd::Tile(v)
    }
}

impl From<&TileView> for DmaEnd {
    fn from(v: &TileView) -> Self {
        DmaEnd::Tile(v.clone())
    }
}

impl From<&Tile> for DmaEnd {
    fn from(t: &Tile) -> Self {
        DmaEnd::Tile(t.all())
    }
}

/// A scalar operand: an immediate, or a `[P, 1]` view giving one value per partition.
#[derive(Clone, Debug)]
pub enum ScalarArg {
    /// The same value everywhere.
    Imm(f64),
    /// One value per partition.
    PerPartition(TileView),
}

impl From<f64> for ScalarArg {
    fn from(v: f64) -> Self {
        ScalarArg::Imm(v)
    }
}

impl From<TileView> for ScalarArg {
    fn from(v: TileView) -> Self {
        ScalarArg::PerPartition(v)
    }
}

impl From<&TileView> for ScalarArg {
    fn from(v: &TileView) -> Self {
        ScalarArg::PerPartition(v.clone())
    }
}

impl From<&Tile> for ScalarArg {
    fn from(t: &Tile) -> Self {
        ScalarArg::PerPartition(t.all())
    }
}

/// One step of `tensor_scalar`: `x OP operand` (or `operand OP x` when reversed).
#[derive(Clone, Debug)]
pub struct Step {
    /// The ALU operation.
    pub op: tessera_ir::AluOp,
    /// Its other operand.
    pub operand: ScalarArg,
    /// `operand OP x` instead of `x OP operand`.
    pub reverse: bool,
}

impl Step {
    /// `x OP operand`.
    pub fn new(op: tessera_ir::AluOp, operand: impl Into<ScalarArg>) -> Self {
        Step {
            op,
            operand: operand.into(),
            reverse: false,
        }
    }

    /// `operand OP x`, e.g. `Step::new(AluOp::Div, 1.0).reversed()` for `1 / x`.
    pub fn reversed(mut self) -> Self {
        self.reverse = true;
        self
    }
}
