//! Planning: every instruction of a machine program is resolved once, before anything runs, into
//! what the run loop needs to execute it.
//!
//! Each operand view is checked against its buffer or tensor (partitions inside the buffer,
//! lowest and highest element inside a partition's elements, in `i128` so no stride overflows)
//! and turned into a [`Raw`] operand: the memory it lives in, the byte address of its element 0
//! and its loop dimensions in element order as `(size, byte stride)`, the partition dimension
//! first. Because the buffer itself lies inside its memory (`check_machine_program`) and the
//! inputs have their declared sizes (`check_inputs`), every address `base + sum(i_k * stride_k)`
//! of a checked operand lies inside its memory: that is the invariant the compiled kernels rely
//! on to never read or write out of bounds.
//!
//! Element-wise operands are then put on one common loop nest ([`refine`]): the coarsest shape
//! whose element order refines every operand's dimensions, with adjacent dimensions merged where
//! every operand is contiguous across them. The kernel's [`KernelKey`] is that shape, the byte
//! strides of each operand, the dtypes and the operation; base addresses and immediates are
//! run-time arguments, so one compiled kernel serves every instruction with the same signature.

use super::JitError;
use super::memory::Loc;
use tessera_ir::{
    ActFunc, AluOp, DType, DmaOperand, HbmAccess, MachineProgram, ReduceOp, Space, TensorKind,
    TileAccess,
};

/// The element-wise computation of a kernel. Operand 0 is always the destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Body {
    /// `dst = src`, same dtype: copies the bits of `width`-byte elements.
    Copy { width: u8 },
    /// `dst = src` between f32 and bf16: decode, then round to nearest even on store.
    Convert,
    /// `dst = lhs op rhs` in f32 (`tensor_tensor`).
    Binary(AluOp),
    /// `dst = ((src op0 s0) op1 s1)` in f32, each step `(op, reverse)` (`tensor_scalar`).
    Scalar(Vec<(AluOp, bool)>),
    /// `dst = value` (`memset`).
    Memset,
    /// `dst = func(src * scale + bias)`, computed in f64 like interp, rounded once to f32.
    Act(ActFunc),
    /// `dst = reduce(src over the inner dims)`, accumulated in f64 in element order.
    Reduce(ReduceOp),
    /// `Act` over the inner dims of each partition, and `accum` (the last argument) = the
    /// f64 sum of the partition's f32 results, rounded once.
    ActAccum(ActFunc),
}

/// How a kernel argument is supplied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Arg {
    /// Through a base pointer, advanced by these byte strides (one per loop dimension).
    Mem { dtype: DType, strides: Vec<i64> },
    /// An immediate: slot `n` of the run-time `f64` array.
    Imm(u8),
}

/// Everything that determines a compiled kernel's code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KernelKey {
    pub body: Body,
    /// Loop sizes, outermost first (partitions folded in).
    pub shape: Vec<u64>,
    pub args: Vec<Arg>,
    /// For reductions and accumulating activations: the dimensions walked for each element of
    /// `shape`, as `(size, byte stride of each memory argument)`.
    pub inner: Vec<(u64, Vec<i64>)>,
}

/// A kernel invocation: its key and run-time arguments.
#[derive(Clone, Debug)]
pub(crate) struct Invocation {
    pub key: KernelKey,
    /// Memory and byte address of element 0 of each `Arg::Mem`, in argument order.
    pub ptrs: Vec<(Loc, u64)>,
    pub imms: Vec<f64>,
}

/// A checked operand view.
#[derive(Clone, Debug)]
pub(crate) struct Raw {
    pub loc: Loc,
    /// Byte address of element 0.
    pub base: u64,
    pub dtype: DType,
    /// `(size, byte stride)` in element order; for tiles the partition dimension first.
    pub dims: Vec<(u64, i64)>,
    /// Partitions (1 for HBM).
    pub rows: u64,
    /// Elements per partition (all elements for HBM).
    pub free: u64,
    /// Absolute partitions touched, `first..end` (`0..1` for HBM).
    pub parts: (u64, u64),
    /// Lowest and one-past-highest byte touched within a partition (absolute for HBM).
    pub extent: (u64, u64),
    /// Byte address of the first element of each row before the view's offset (tiles), used
    /// by the matmul gather.
    pub row0: u64,
    /// Byte distance between partitions (0 for HBM).
    pub pb: u64,
}

impl Raw {
    /// Whether the two views may touch a common byte (same memory, intersecting partitions and
    /// intersecting byte ranges within a partition).
    pub fn may_overlap(&self, other: &Raw) -> bool {
        self.loc == other.loc
            && self.parts.0 < other.parts.1
            && other.parts.0 < self.parts.1
            && self.extent.0 < other.extent.1
            && other.extent.0 < self.extent.1
    }

    pub fn is_empty(&self) -> bool {
        self.dims.iter().any(|d| d.0 == 0)
    }

    pub fn elems(&self) -> u64 {
        self.rows.saturating_mul(self.free)
    }
}

/// The geometry the resolver needs: the program and the bytes from one partition row to the
/// next of each memory in the jit's host layout (`memory::host_pitch`).
pub(crate) struct Resolver<'p> {
    pub program: &'p MachineProgram,
    pub sbuf_pb: u64,
    pub psum_pb: u64,
    /// Names the instruction in error messages.
    pub at: String,
}

impl Resolver<'_> {
    fn oob(&self, role: &str, name: String, detail: String) -> JitError {
        JitError::OutOfBounds {
            inst: self.at.clone(),
            role: role.to_string(),
            name,
            detail,
        }
    }

    fn unknown(&self, role: &str, what: String) -> JitError {
        JitError::BadInstruction {
            inst: self.at.clone(),
            detail: format!("`{role}` refers to {what}, which the program does not declare"),
        }
    }

    /// Resolves and bounds-checks a tile operand.
    pub fn tile(&self, role: &str, t: &TileAccess) -> Result<Raw, JitError> {
        let b = self
            .program
            .buffers
            .get(t.buf.0 as usize)
            .ok_or_else(|| self.unknown(role, format!("buffer #{}", t.buf.0)))?;
        let placement = b.placement.ok_or_else(|| JitError::BadInstruction {
            inst: self.at.clone(),
            detail: format!("buffer %{} has no placement", b.name),
        })?;
        let end = t.start_partition as u64 + t.partitions as u64;
        if end > b.partitions as u64 {
            return Err(self.oob(
                role,
                format!("%{}", b.name),
                format!(
                    "partitions {}..{end} but the buffer has {}",
                    t.start_partition, b.partitions
                ),
            ));
        }
        let limit = b.free_elems();
        let w = b.dtype.size_bytes() as u64;
        let (lo, hi) = check_range(t.offset, t.dims.iter().map(|d| (d.size, d.stride)), limit)
            .map_err(|d| {
                self.oob(
                    role,
                    format!("%{}", b.name),
                    format!("{d} of each partition"),
                )
            })?;
        let pb = match b.space {
            Space::Sbuf => self.sbuf_pb,
            Space::Psum => self.psum_pb,
        };
        let first = placement.partition as u64 + t.start_partition as u64;
        let row0 = first * pb + placement.byte_offset;
        let mut dims = vec![(t.partitions as u64, pb as i64)];
        dims.extend(t.dims.iter().map(|d| (d.size as u64, d.stride * w as i64)));
        Ok(Raw {
            loc: match b.space {
                Space::Sbuf => Loc::Sbuf,
                Space::Psum => Loc::Psum,
            },
            base: row0 + t.offset * w,
            dtype: b.dtype,
            dims,
            rows: t.partitions as u64,
            free: t.free_elems(),
            parts: (first, first + t.partitions as u64),
            extent: (
                placement.byte_offset + lo * w,
                placement.byte_offset + (hi + 1) * w,
            ),
            row0,
            pb,
        })
    }

    /// Resolves and bounds-checks an HBM operand of a DMA.
    pub fn hbm(&self, role: &str, h: &HbmAccess) -> Result<Raw, JitError> {
        let slot = h.tensor.0 as usize;
        let t = self
            .program
            .tensors
            .get(slot)
            .ok_or_else(|| self.unknown(role, format!("tensor #{}", h.tensor.0)))?;
        let w = t.dtype.size_bytes() as u64;
        let (lo, hi) = check_range(
            h.offset,
            h.dims.iter().map(|d| (d.size, d.stride)),
            t.elems(),
        )
        .map_err(|d| self.oob(role, format!("@{}", t.name), format!("{d} of the tensor")))?;
        let (loc, start) = match t.kind {
            TensorKind::Scratch => {
                let at = self.program.hbm_offsets.get(slot).copied().flatten();
                let at = at.ok_or_else(|| JitError::BadInstruction {
                    inst: self.at.clone(),
                    detail: format!("scratch tensor @{} has no arena offset", t.name),
                })?;
                (Loc::Arena, at)
            }
            TensorKind::Input | TensorKind::Output => (Loc::Tensor(slot), 0),
        };
        Ok(Raw {
            loc,
            base: start + h.offset * w,
            dtype: t.dtype,
            dims: h
                .dims
                .iter()
                .map(|d| (d.size as u64, d.stride * w as i64))
                .collect(),
            rows: 1,
            free: h.elems(),
            parts: (0, 1),
            extent: (start + lo * w, start + (hi + 1) * w),
            row0: start,
            pb: 0,
        })
    }

    pub fn dma(&self, role: &str, op: &DmaOperand) -> Result<Raw, JitError> {
        match op {
            DmaOperand::Hbm(h) => self.hbm(role, h),
            DmaOperand::Tile(t) => self.tile(role, t),
        }
    }
}

/// Checks that every element `offset + sum(i_k * stride_k)` lies in `0..limit`; returns the
/// lowest and highest element (`(offset, offset)` for an empty view, which touches nothing).
fn check_range(
    offset: u64,
    dims: impl Iterator<Item = (u32, i64)>,
    limit: u64,
) -> Result<(u64, u64), String> {
    let (mut lo, mut hi) = (offset as i128, offset as i128);
    let mut empty = false;
    for (size, stride) in dims {
        if size == 0 {
            empty = true;
        }
        let span = stride as i128 * (size as i128 - 1).max(0);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if empty {
        return Ok((offset.min(limit), offset.min(limit)));
    }
    if lo < 0 || hi >= limit as i128 {
        return Err(format!("elements {lo}..={hi} fall outside 0..{limit}"));
    }
    Ok((lo as u64, hi as u64))
}

/// A source of an element-wise kernel.
pub(crate) enum Src {
    Mem(Raw),
    Imm(f64),
}

/// A per-partition scalar operand of an operation over `rows x free` elements: element 0 of
/// each of its partitions, repeated over the free elements. `None` when its shape does not fit
/// (interp then reports the mismatch).
pub(crate) fn per_partition(s: Raw, rows: u64, free: u64) -> Option<Raw> {
    if s.rows != rows || s.free == 0 {
        return None;
    }
    Some(Raw {
        dims: vec![(rows, s.pb as i64), (free, 0)],
        ..s
    })
}

/// The common loop nest of operands with the same element count: sizes outermost first and, per
/// operand, the byte stride of each loop. `None` when the dimensions do not nest (e.g. `[2, 3]`
/// paired with `[3, 2]`), which is left to interp.
pub(crate) fn refine(ops: &[&[(u64, i64)]]) -> Option<(Vec<u64>, Vec<Vec<i64>>)> {
    let lists: Vec<Vec<(u64, i64)>> = ops
        .iter()
        .map(|dims| dims.iter().copied().filter(|d| d.0 != 1).collect())
        .collect();
    let mut shape = Vec::new();
    let mut strides: Vec<Vec<i64>> = vec![Vec::new(); lists.len()];
    // Per operand: index of the current dim (from the innermost) and how much of it is used.
    let mut cur: Vec<(usize, u64)> = vec![(0, 1); lists.len()];
    loop {
        let rem: Vec<Option<u64>> = lists
            .iter()
            .zip(&cur)
            .map(|(l, &(i, used))| l.len().checked_sub(i + 1).map(|k| l[k].0 / used))
            .collect();
        if rem.iter().all(Option::is_none) {
            break;
        }
        let rem: Vec<u64> = rem.into_iter().collect::<Option<_>>()?;
        let s = *rem.iter().min()?;
        if s == 0 || rem.iter().any(|r| r % s != 0) {
            return None;
        }
        shape.push(s);
        for ((l, c), st) in lists.iter().zip(cur.iter_mut()).zip(strides.iter_mut()) {
            let (size, stride) = l[l.len() - 1 - c.0];
            st.push(stride.checked_mul(c.1 as i64)?);
            c.1 *= s;
            if c.1 == size {
                *c = (c.0 + 1, 1);
            }
        }
    }
    shape.reverse();
    for s in &mut strides {
        s.reverse();
    }
    // Merge an outer loop into the next when every operand is contiguous across them.
    let mut i = shape.len();
    while i >= 2 {
        let (outer, inner) = (i - 2, i - 1);
        if strides
            .iter()
            .all(|s| s[outer] == s[inner].saturating_mul(shape[inner] as i64))
        {
            shape[outer] *= shape[inner];
            shape.remove(inner);
            for s in &mut strides {
                s[outer] = s[inner];
                s.remove(inner);
            }
        }
        i -= 1;
    }
    Some((shape, strides))
}

/// Builds an element-wise invocation, or `None` when the JIT leaves it to interp (shapes that do
/// not pair, empty views, a destination overlapping a source in a different pattern).
pub(crate) fn elementwise(body: Body, dst: Raw, srcs: Vec<Src>) -> Option<Invocation> {
    if dst.is_empty() || dst.elems() == 0 {
        return None;
    }
    let mut mems: Vec<&Raw> = vec![&dst];
    for s in &srcs {
        if let Src::Mem(r) = s {
            if r.is_empty() {
                return None;
            }
            mems.push(r);
        }
    }
    let total = |r: &Raw| r.dims.iter().fold(1u64, |n, d| n.saturating_mul(d.0));
    if mems.iter().any(|r| total(r) != total(&dst)) {
        return None;
    }
    let dims: Vec<&[(u64, i64)]> = mems.iter().map(|r| r.dims.as_slice()).collect();
    let (mut shape, mut strides) = refine(&dims)?;
    if matches!(body, Body::Copy { .. } | Body::Convert) {
        block_transposed(&mut shape, &mut strides, dst.dtype.size_bytes() as i64);
    }
    // A source in the destination's memory must either not overlap it or be read exactly where
    // it is written (in place); anything else needs interp's read-all-then-write order.
    for (r, st) in mems.iter().zip(&strides).skip(1) {
        let overlaps = r.may_overlap(&dst);
        let in_place = r.base == dst.base
            && &strides[0] == st
            && r.dtype.size_bytes() == dst.dtype.size_bytes();
        if overlaps && !in_place {
            return None;
        }
    }
    let mut args = Vec::new();
    let mut ptrs = Vec::new();
    let mut imms = Vec::new();
    let mut strides = strides.into_iter();
    let mut push_mem = |r: &Raw, args: &mut Vec<Arg>, st: Vec<i64>| {
        args.push(Arg::Mem {
            dtype: r.dtype,
            strides: st,
        });
        ptrs.push((r.loc, r.base));
    };
    push_mem(&dst, &mut args, strides.next()?);
    for s in &srcs {
        match s {
            Src::Mem(r) => push_mem(r, &mut args, strides.next()?),
            Src::Imm(v) => {
                args.push(Arg::Imm(u8::try_from(imms.len()).ok()?));
                imms.push(*v);
            }
        }
    }
    Some(Invocation {
        key: KernelKey {
            body,
            shape,
            args,
            inner: Vec::new(),
        },
        ptrs,
        imms,
    })
}

/// Reorders the loops of a transposing copy (`dst` contiguous along the innermost loop, the
/// source along another, reading elements far apart) into tiles: the innermost loop is cut
/// into blocks of `TILE` that become the outermost loop, so the source lines read for one
/// destination row stay cached while the next rows use them. A copy's elements are independent
/// (`elementwise` admits no source overlapping the destination except in place), so any
/// order writes the same bytes, provided no two elements share a destination address, which is
/// checked: each destination stride spans the loops inside it.
fn block_transposed(shape: &mut Vec<u64>, strides: &mut [Vec<i64>], width: i64) {
    /// Elements per tile: a cache line of f32.
    const TILE: u64 = 16;
    let [dst, src] = strides else {
        return;
    };
    let Some(last) = shape.len().checked_sub(1) else {
        return;
    };
    let n = shape[last];
    // Innermost: contiguous in the destination, 256 bytes or more apart in the source; some
    // other loop reads the source contiguously.
    let transposing = dst[last] == width
        && src[last].abs() >= 256
        && n.is_multiple_of(TILE)
        && n >= 2 * TILE
        && (0..last).any(|d| src[d].abs() == width && shape[d] >= TILE);
    if !transposing || !distinct_addresses(shape, dst, width) {
        return;
    }
    shape.insert(0, n / TILE);
    shape[last + 1] = TILE;
    for st in [dst, src] {
        st.insert(0, st[last] * TILE as i64);
    }
}

/// Whether a loop nest over `width`-byte elements visits every element's bytes once: ordered by
/// stride, each loop's stride is at least the span of the loops inside it.
fn distinct_addresses(shape: &[u64], strides: &[i64], width: i64) -> bool {
    let mut loops: Vec<(i64, u64)> = strides
        .iter()
        .map(|s| s.abs())
        .zip(shape.iter().copied())
        .collect();
    loops.sort_unstable();
    let mut span = width;
    for (stride, size) in loops {
        if stride < span {
            return false;
        }
        span = stride.saturating_mul(size as i64);
    }
    true
}

/// A reduction over the trailing `axes` free dims of `src` into `dst`.
pub(crate) fn reduce(op: ReduceOp, dst: Raw, src: Raw, axes: usize) -> Option<Invocation> {
    let nd = src.dims.len().checked_sub(1)?;
    if axes == 0 || axes > nd || dst.is_empty() || src.is_empty() || dst.rows != src.rows {
        return None;
    }
    let (outer, reduced) = src.dims.split_at(src.dims.len() - axes);
    let outer_elems = outer.iter().skip(1).fold(1u64, |n, d| n * d.0);
    if dst.free != outer_elems {
        return None;
    }
    if src.may_overlap(&dst) {
        return None;
    }
    let (shape, mut strides) = refine(&[dst.dims.as_slice(), outer])?;
    let (ishape, istrides) = refine(&[reduced])?;
    let inner = ishape
        .into_iter()
        .zip(istrides.into_iter().next()?)
        .map(|(n, s)| (n, vec![0, s]))
        .collect();
    let src_strides = strides.pop()?;
    let dst_strides = strides.pop()?;
    Some(Invocation {
        key: KernelKey {
            body: Body::Reduce(op),
            shape,
            args: vec![
                Arg::Mem {
                    dtype: dst.dtype,
                    strides: dst_strides,
                },
                Arg::Mem {
                    dtype: src.dtype,
                    strides: src_strides,
                },
            ],
            inner,
        },
        ptrs: vec![(dst.loc, dst.base), (src.loc, src.base)],
        imms: Vec::new(),
    })
}

/// `activation` with `accum`: the outer loop walks the partitions, the inner loops the free
/// elements of `dst`, `src` and the scalars; `accum` (`rows x 1`) is written once per partition.
pub(crate) fn act_accum(
    func: ActFunc,
    dst: Raw,
    src: Raw,
    scale: Src,
    bias: Src,
    accum: Raw,
) -> Option<Invocation> {
    if dst.is_empty() || src.is_empty() || accum.is_empty() || accum.rows != src.rows {
        return None;
    }
    if accum.free != 1 || accum.may_overlap(&dst) || accum.may_overlap(&src) {
        return None;
    }
    if src.may_overlap(&dst)
        && (src.base != dst.base
            || src.dims != dst.dims
            || src.dtype.size_bytes() != dst.dtype.size_bytes())
    {
        return None;
    }
    let rows = src.rows;
    let mut args = Vec::new();
    let mut ptrs = Vec::new();
    let mut imms = Vec::new();
    let mut outer = Vec::new();
    let mut free_dims: Vec<Vec<(u64, i64)>> = Vec::new();
    let mut mem = |r: &Raw, free: Vec<(u64, i64)>, args: &mut Vec<Arg>| {
        outer.push(r.dims.first().map_or(0, |d| d.1));
        free_dims.push(free);
        ptrs.push((r.loc, r.base));
        args.push(Arg::Mem {
            dtype: r.dtype,
            strides: Vec::new(),
        });
    };
    mem(&dst, dst.dims[1..].to_vec(), &mut args);
    mem(&src, src.dims[1..].to_vec(), &mut args);
    for s in [&scale, &bias] {
        match s {
            Src::Mem(r) => mem(r, vec![(src.free, 0)], &mut args),
            Src::Imm(v) => {
                args.push(Arg::Imm(u8::try_from(imms.len()).ok()?));
                imms.push(*v);
            }
        }
    }
    mem(&accum, vec![(src.free, 0)], &mut args);
    let lists: Vec<&[(u64, i64)]> = free_dims.iter().map(Vec::as_slice).collect();
    let (ishape, istrides) = refine(&lists)?;
    let mut k = 0;
    for a in &mut args {
        if let Arg::Mem { strides, .. } = a {
            strides.push(outer[k]);
            k += 1;
        }
    }
    let inner = ishape
        .iter()
        .enumerate()
        .map(|(d, &n)| (n, istrides.iter().map(|s| s[d]).collect()))
        .collect();
    Some(Invocation {
        key: KernelKey {
            body: Body::ActAccum(func),
            shape: vec![rows],
            args,
            inner,
        },
        ptrs,
        imms,
    })
}

/// The dtypes compiled kernels compute on.
pub(crate) fn is_f32ish(d: DType) -> bool {
    matches!(d, DType::F32 | DType::Bf16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposing_copies_are_tiled_only_when_safe() {
        // BERT's stationary load: [128 partitions, 2, 64] from a [64, 256] tensor.
        let (mut shape, mut st) = (
            vec![128, 2, 64],
            vec![vec![229376, 256, 4], vec![4, 512, 1024]],
        );
        block_transposed(&mut shape, &mut st, 4);
        assert_eq!(shape, [4, 128, 2, 16]);
        assert_eq!(st, [vec![64, 229376, 256, 4], vec![16384, 4, 512, 1024]]);
        // Not when two elements share a destination (a broadcast row), nor when the source is
        // read contiguously, nor when the row does not split into tiles.
        for (shape0, st0) in [
            (vec![128, 64], vec![vec![0, 4], vec![4, 1024]]),
            (vec![128, 64], vec![vec![1024, 4], vec![1024, 4]]),
            (vec![128, 40], vec![vec![1024, 4], vec![4, 1024]]),
        ] {
            let (mut shape, mut st) = (shape0.clone(), st0.clone());
            block_transposed(&mut shape, &mut st, 4);
            assert_eq!((shape, st), (shape0, st0));
        }
        assert!(distinct_addresses(&[4, 8], &[32, 4], 4));
        assert!(!distinct_addresses(&[4, 8], &[16, 4], 4));
        assert!(!distinct_addresses(&[4, 8], &[0, 4], 4));
    }

    #[test]
    fn refine_nests_and_merges() {
        // A [4, 6] view paired with a flat 24-element one.
        let (shape, st) = refine(&[&[(4, 24), (6, 4)], &[(24, 4)]]).unwrap();
        assert_eq!(shape, vec![24]);
        assert_eq!(st, vec![vec![4], vec![4]]);
        // Transposed source: no merging.
        let (shape, st) = refine(&[&[(2, 12), (3, 4)], &[(2, 4), (3, 8)]]).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(st, vec![vec![12, 4], vec![4, 8]]);
        // [2, 3] against [3, 2] does not nest.
        assert!(refine(&[&[(2, 12), (3, 4)], &[(3, 8), (2, 4)]]).is_none());
        // Size-1 dims vanish; one element needs no loop.
        assert_eq!(
            refine(&[&[(1, 7)], &[(1, 0)]]).unwrap().0,
            Vec::<u64>::new()
        );
    }
}
