//! The emulated memories and the checked views into them.
//!
//! Every HBM tensor and every live SBUF/PSUM buffer is a [`Region`]: `rows` partitions of
//! `row_elems` elements in their dtype's byte encoding, plus one "initialised" flag per element.
//! HBM tensors are a single row. New storage is poisoned (all flags false) so a read before a
//! write is caught; buffers get fresh storage at `alloc` and lose it at `free`.
//!
//! An operand is resolved once per instruction into a [`View`]: the region, the partitions it
//! covers and the precomputed list of element offsets within a partition, already checked to be
//! in bounds. Reads and writes then walk that list with no further index arithmetic.

use super::error::{Ctx, InterpError, PoisonedElement};
use std::collections::BTreeMap;
use tessera_ir::{
    Buffer, DType, Dim, HbmAccess, HbmTensor, HostTensor, TensorKind, TileAccess, TileProgram,
};

/// Largest storage one buffer or tensor may take, so that a nonsensical declaration is an
/// error instead of an allocation failure (real capacities are the verifier's business).
pub(crate) const MAX_STORAGE_BYTES: u64 = 1 << 32;

/// Largest number of elements one operand view may address over all its partitions (broadcast
/// views can address far more elements than their buffer holds); bounds the emulator's
/// temporary vectors.
const MAX_VIEW_ELEMS: u64 = 1 << 26;

/// Storage of one tensor or buffer.
#[derive(Debug)]
pub(crate) struct Region {
    /// `%buffer` or `@tensor`, for messages.
    pub name: String,
    /// HBM tensors have no partitions in messages.
    pub hbm: bool,
    pub dtype: DType,
    pub rows: usize,
    pub row_elems: usize,
    pub data: Vec<u8>,
    pub init: Vec<bool>,
}

impl Region {
    /// Poisoned storage, or a description of why it cannot be created.
    fn poisoned(
        name: String,
        hbm: bool,
        dtype: DType,
        rows: u64,
        row_elems: u64,
    ) -> Result<Region, String> {
        let elems = rows.checked_mul(row_elems);
        let bytes = elems.and_then(|e| e.checked_mul(dtype.size_bytes() as u64));
        let (Some(elems), Some(bytes)) = (elems, bytes) else {
            return Err(format!("{name} is too large to emulate"));
        };
        if bytes > MAX_STORAGE_BYTES {
            return Err(format!(
                "{name} needs {bytes} bytes, more than the emulator's limit of {MAX_STORAGE_BYTES}"
            ));
        }
        // The sizes fit in u64 below 2^32, so they fit in usize on the hosts we support.
        let too_large = || format!("{name} is too large for this host");
        let elems = usize::try_from(elems).map_err(|_| too_large())?;
        let bytes = usize::try_from(bytes).map_err(|_| too_large())?;
        let rows = usize::try_from(rows).map_err(|_| too_large())?;
        let row_elems = usize::try_from(row_elems).map_err(|_| too_large())?;
        Ok(Region {
            name,
            hbm,
            dtype,
            rows,
            row_elems,
            data: vec![0; bytes],
            init: vec![false; elems],
        })
    }

    fn poison(&self, ctx: Ctx<'_>, role: &'static str, row: usize, col: usize) -> InterpError {
        InterpError::PoisonRead {
            site: ctx.site(),
            role,
            element: PoisonedElement {
                name: self.name.clone(),
                partition: if self.hbm { None } else { Some(row as u32) },
                element: col as u64,
            },
        }
    }
}

/// Which region a view refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionKey {
    Tensor(usize),
    Buffer(usize),
}

/// A checked operand: partitions `first_row .. first_row + rows` of a region and, in each, the
/// elements at `offsets` (in element order). For HBM, one row.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub key: RegionKey,
    pub role: &'static str,
    pub dtype: DType,
    pub first_row: usize,
    pub rows: usize,
    pub offsets: Vec<usize>,
}

impl View {
    /// Elements per partition.
    pub fn free(&self) -> usize {
        self.offsets.len()
    }

    /// Total elements.
    pub fn len(&self) -> usize {
        self.rows * self.offsets.len()
    }

    /// `4 partitions x 8 elements`, for shape messages.
    pub fn shape(&self) -> String {
        format!("{} partitions x {} elements", self.rows, self.offsets.len())
    }
}

/// All memories of one run.
#[derive(Debug)]
pub(crate) struct Memory<'p> {
    decl: &'p [Buffer],
    tensors: Vec<Region>,
    buffers: Vec<Option<Region>>,
    /// Buffers that were live once and have been freed, for a clearer "already freed" message.
    freed: Vec<bool>,
}

impl<'p> Memory<'p> {
    /// HBM initialised from the inputs (checked against the declarations), nothing allocated.
    pub fn new(
        program: &'p TileProgram,
        inputs: &BTreeMap<String, HostTensor>,
    ) -> Result<Self, InterpError> {
        check_inputs(&program.tensors, inputs)?;
        let mut tensors = Vec::with_capacity(program.tensors.len());
        for t in &program.tensors {
            let mut region = Region::poisoned(
                format!("@{}", t.name),
                true,
                t.dtype,
                1,
                checked_product(&t.shape),
            )
            .map_err(|detail| InterpError::BadProgram { detail })?;
            if t.kind == TensorKind::Input
                && let Some(host) = inputs.get(&t.name)
            {
                // check_inputs guaranteed the byte count.
                region.data.copy_from_slice(&host.data);
                region.init.fill(true);
            }
            tensors.push(region);
        }
        let n = program.buffers.len();
        Ok(Memory {
            decl: &program.buffers,
            tensors,
            buffers: (0..n).map(|_| None).collect(),
            freed: vec![false; n],
        })
    }

    fn buffer_decl(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        id: u32,
    ) -> Result<&'p Buffer, InterpError> {
        self.decl
            .get(id as usize)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("buffer #{id}"),
            })
    }

    fn not_live(&self, ctx: Ctx<'_>, role: &'static str, id: usize) -> InterpError {
        let freed = self.freed.get(id).copied().unwrap_or(false);
        InterpError::NotLive {
            site: ctx.site(),
            role,
            buffer: self
                .decl
                .get(id)
                .map_or_else(|| format!("#{id}"), |b| b.name.clone()),
            state: if freed {
                "already freed"
            } else {
                "not allocated"
            },
        }
    }

    /// `alloc`: fresh poisoned storage.
    pub fn alloc(&mut self, ctx: Ctx<'_>, id: u32) -> Result<(), InterpError> {
        let decl = self.buffer_decl(ctx, "buf", id)?;
        let slot = id as usize;
        if matches!(self.buffers.get(slot), Some(Some(_))) {
            return Err(InterpError::NotLive {
                site: ctx.site(),
                role: "buf",
                buffer: decl.name.clone(),
                state: "already allocated",
            });
        }
        let region = Region::poisoned(
            format!("%{}", decl.name),
            false,
            decl.dtype,
            decl.partitions as u64,
            checked_product(&decl.free_shape),
        )
        .map_err(|detail| ctx.bad(detail))?;
        if let Some(s) = self.buffers.get_mut(slot) {
            *s = Some(region);
        }
        Ok(())
    }

    /// `free`: the storage is dropped; later uses are errors.
    pub fn free(&mut self, ctx: Ctx<'_>, id: u32) -> Result<(), InterpError> {
        self.buffer_decl(ctx, "buf", id)?;
        let slot = id as usize;
        match self.buffers.get_mut(slot).and_then(Option::take) {
            Some(_) => {
                if let Some(f) = self.freed.get_mut(slot) {
                    *f = true;
                }
                Ok(())
            }
            None => Err(self.not_live(ctx, "buf", slot)),
        }
    }

    fn region(&self, ctx: Ctx<'_>, view: &View) -> Result<&Region, InterpError> {
        match view.key {
            RegionKey::Tensor(i) => self.tensors.get(i).ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role: view.role,
                what: format!("tensor #{i}"),
            }),
            RegionKey::Buffer(i) => match self.buffers.get(i) {
                Some(Some(r)) => Ok(r),
                _ => Err(self.not_live(ctx, view.role, i)),
            },
        }
    }

    fn region_mut(&mut self, ctx: Ctx<'_>, view: &View) -> Result<&mut Region, InterpError> {
        // Resolve the error first: `not_live` needs `&self`.
        self.region(ctx, view)?;
        let region = match view.key {
            RegionKey::Tensor(i) => self.tensors.get_mut(i),
            RegionKey::Buffer(i) => self.buffers.get_mut(i).and_then(Option::as_mut),
        };
        region.ok_or_else(|| ctx.bad("internal: region vanished".to_string()))
    }

    /// Resolves and checks a tile operand.
    pub fn tile_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        t: &TileAccess,
    ) -> Result<View, InterpError> {
        self.buffer_decl(ctx, role, t.buf.0)?;
        let slot = t.buf.0 as usize;
        let Some(Some(region)) = self.buffers.get(slot) else {
            return Err(self.not_live(ctx, role, slot));
        };
        let shape = RegionShape {
            name: &region.name,
            dtype: region.dtype,
            rows: region.rows as u64,
            row_elems: region.row_elems as u64,
        };
        resolve_tile(ctx, role, RegionKey::Buffer(slot), shape, t)
    }

    /// Resolves and checks an HBM operand of a DMA.
    pub fn hbm_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        h: &HbmAccess,
    ) -> Result<View, InterpError> {
        let slot = h.tensor.0 as usize;
        let region = self
            .tensors
            .get(slot)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("tensor #{}", h.tensor.0),
            })?;
        let shape = RegionShape {
            name: &region.name,
            dtype: region.dtype,
            rows: 1,
            row_elems: region.row_elems as u64,
        };
        resolve_hbm(ctx, role, slot, shape, h)
    }

    /// Decodes every element of the view, in element order; a poisoned element is an error.
    pub fn read(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<f64>, InterpError> {
        let region = self.region(ctx, view)?;
        let w = region.dtype.size_bytes();
        let mut out = Vec::with_capacity(view.len());
        for row in view.first_row..view.first_row + view.rows {
            let base = row * region.row_elems;
            for &o in &view.offsets {
                let i = base + o;
                match (region.init.get(i), region.data.get(i * w..i * w + w)) {
                    (Some(true), Some(bytes)) => out.push(region.dtype.decode(bytes)),
                    _ => return Err(region.poison(ctx, view.role, row, o)),
                }
            }
        }
        Ok(out)
    }

    /// The raw encoded bytes of every element of the view, in element order (for exact copies).
    pub fn read_bytes(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<u8>, InterpError> {
        let region = self.region(ctx, view)?;
        let w = region.dtype.size_bytes();
        let mut out = Vec::with_capacity(view.len() * w);
        for row in view.first_row..view.first_row + view.rows {
            let base = row * region.row_elems;
            for &o in &view.offsets {
                let i = base + o;
                match (region.init.get(i), region.data.get(i * w..i * w + w)) {
                    (Some(true), Some(bytes)) => out.extend_from_slice(bytes),
                    _ => return Err(region.poison(ctx, view.role, row, o)),
                }
            }
        }
        Ok(out)
    }

    /// Stores `values` (element order) through the view, rounding each to the region's dtype.
    pub fn write(&mut self, ctx: Ctx<'_>, view: &View, values: &[f64]) -> Result<(), InterpError> {
        check_len(ctx, view, values.len())?;
        let region = self.region_mut(ctx, view)?;
        let w = region.dtype.size_bytes();
        let dtype = region.dtype;
        let mut values = values.iter();
        for row in view.first_row..view.first_row + view.rows {
            let base = row * region.row_elems;
            for &o in &view.offsets {
                let i = base + o;
                if let (Some(&v), Some(bytes), Some(flag)) = (
                    values.next(),
                    region.data.get_mut(i * w..i * w + w),
                    region.init.get_mut(i),
                ) {
                    dtype.encode(v, bytes);
                    *flag = true;
                }
            }
        }
        Ok(())
    }

    /// Stores already-encoded elements (of the region's dtype) through the view.
    pub fn write_bytes(
        &mut self,
        ctx: Ctx<'_>,
        view: &View,
        bytes: &[u8],
    ) -> Result<(), InterpError> {
        let w = view.dtype.size_bytes();
        check_len(ctx, view, bytes.len() / w)?;
        let region = self.region_mut(ctx, view)?;
        let mut chunks = bytes.chunks_exact(w);
        for row in view.first_row..view.first_row + view.rows {
            let base = row * region.row_elems;
            for &o in &view.offsets {
                let i = base + o;
                if let (Some(src), Some(dst), Some(flag)) = (
                    chunks.next(),
                    region.data.get_mut(i * w..i * w + w),
                    region.init.get_mut(i),
                ) {
                    dst.copy_from_slice(src);
                    *flag = true;
                }
            }
        }
        Ok(())
    }

    /// The output tensors, each checked to be fully written.
    pub fn outputs(
        self,
        program: &TileProgram,
    ) -> Result<BTreeMap<String, HostTensor>, InterpError> {
        let mut out = BTreeMap::new();
        for (t, region) in program.tensors.iter().zip(self.tensors) {
            if t.kind != TensorKind::Output {
                continue;
            }
            if let Some(first) = region.init.iter().position(|&w| !w) {
                return Err(InterpError::OutputNotWritten {
                    name: t.name.clone(),
                    element: first as u64,
                    index: unflatten(first, &t.shape),
                });
            }
            out.insert(
                t.name.clone(),
                HostTensor {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data: region.data,
                },
            );
        }
        Ok(out)
    }
}

/// What the resolvers need to know about the storage a view addresses: both emulator levels
/// describe a buffer or tensor this way, so operand checking is defined once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionShape<'a> {
    /// `%buffer` or `@tensor`, for messages.
    pub name: &'a str,
    pub dtype: DType,
    /// Partitions of a buffer (1 for a tensor).
    pub rows: u64,
    /// Elements per partition (all elements for a tensor).
    pub row_elems: u64,
}

/// Checks a tile operand against its buffer's shape and lists its element offsets.
pub(crate) fn resolve_tile(
    ctx: Ctx<'_>,
    role: &'static str,
    key: RegionKey,
    shape: RegionShape<'_>,
    t: &TileAccess,
) -> Result<View, InterpError> {
    let out_of_bounds = |detail: String| InterpError::OutOfBounds {
        site: ctx.site(),
        role,
        name: shape.name.to_string(),
        detail,
    };
    let end = t.start_partition as u64 + t.partitions as u64;
    if end > shape.rows {
        return Err(out_of_bounds(format!(
            "partitions {}..{end} but the buffer has {}",
            t.start_partition, shape.rows
        )));
    }
    let offsets = element_offsets(ctx, t.offset, &t.dims, shape.row_elems, t.partitions).map_err(
        |e| match e {
            OffsetError::Bounds(d) => out_of_bounds(format!("{d} of each partition")),
            OffsetError::Bad(e) => e,
        },
    )?;
    Ok(View {
        key,
        role,
        dtype: shape.dtype,
        first_row: t.start_partition as usize,
        rows: t.partitions as usize,
        offsets,
    })
}

/// Checks an HBM operand of a DMA against tensor `slot` and lists its element offsets.
pub(crate) fn resolve_hbm(
    ctx: Ctx<'_>,
    role: &'static str,
    slot: usize,
    shape: RegionShape<'_>,
    h: &HbmAccess,
) -> Result<View, InterpError> {
    let offsets =
        element_offsets(ctx, h.offset, &h.dims, shape.row_elems, 1).map_err(|e| match e {
            OffsetError::Bounds(d) => InterpError::OutOfBounds {
                site: ctx.site(),
                role,
                name: shape.name.to_string(),
                detail: format!("{d} of the tensor"),
            },
            OffsetError::Bad(e) => e,
        })?;
    Ok(View {
        key: RegionKey::Tensor(slot),
        role,
        dtype: shape.dtype,
        first_row: 0,
        rows: 1,
        offsets,
    })
}

pub(crate) fn check_len(ctx: Ctx<'_>, view: &View, given: usize) -> Result<(), InterpError> {
    if given == view.len() {
        Ok(())
    } else {
        Err(ctx.shape_mismatch(format!(
            "`{}` holds {} elements but {given} were computed for it",
            view.role,
            view.len()
        )))
    }
}

/// The product of a declared shape, saturating (the ir's `elems()` would overflow on an absurd
/// declaration; a saturated size is then rejected as too large).
pub(crate) fn checked_product(shape: &[usize]) -> u64 {
    shape
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

/// Row-major multi-index of element `i` of a tensor of `shape`.
pub(crate) fn unflatten(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &d) in index.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = i % d;
            i /= d;
        }
    }
    index
}

enum OffsetError {
    Bounds(String),
    Bad(InterpError),
}

/// The element offsets `offset + sum(i_k * stride_k)` in element order, each checked to lie in
/// `0..limit`. The extremes are checked first (in i128, so no stride can overflow), which makes
/// every generated offset valid.
fn element_offsets(
    ctx: Ctx<'_>,
    offset: u64,
    dims: &[Dim],
    limit: u64,
    rows: u32,
) -> Result<Vec<usize>, OffsetError> {
    let mut count: u64 = rows.max(1) as u64;
    for d in dims {
        count = count.saturating_mul(d.size as u64);
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_VIEW_ELEMS {
        return Err(OffsetError::Bad(ctx.bad(format!(
            "a view addresses {count} elements, more than the emulator's limit of {MAX_VIEW_ELEMS}"
        ))));
    }
    let (mut lo, mut hi) = (offset as i128, offset as i128);
    for d in dims {
        let span = d.stride as i128 * (d.size as i128 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 || hi >= limit as i128 {
        return Err(OffsetError::Bounds(format!(
            "elements {lo}..={hi} fall outside 0..{limit}"
        )));
    }
    // Every partial sum lies between lo and hi too, so the usize arithmetic below is exact.
    let mut out: Vec<usize> = Vec::with_capacity((count / rows.max(1) as u64) as usize);
    out.push(offset as usize);
    for d in dims {
        if d.size == 1 {
            continue;
        }
        let mut next = Vec::with_capacity(out.len() * d.size as usize);
        for &base in &out {
            let mut at = base as i64;
            for _ in 0..d.size {
                next.push(at as usize);
                at = at.wrapping_add(d.stride);
            }
        }
        out = next;
    }
    Ok(out)
}

fn describe(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// Every input given, with the declared dtype, shape and byte count; nothing else given.
pub(crate) fn check_inputs<I: crate::TensorSet + ?Sized>(
    tensors: &[HbmTensor],
    inputs: &I,
) -> Result<(), InterpError> {
    let inputs_declared = || tensors.iter().filter(|t| t.kind == TensorKind::Input);
    let mut seen = std::collections::BTreeSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(InterpError::BadProgram {
                detail: format!("two HBM tensors are named `{}`", t.name),
            });
        }
    }
    for name in inputs.names() {
        let is_input = inputs_declared().any(|t| t.name == name);
        if !is_input {
            let expected: Vec<&str> = inputs_declared().map(|t| t.name.as_str()).collect();
            return Err(InterpError::UnknownInput {
                name: name.to_string(),
                expected: expected.join(", "),
            });
        }
    }
    for t in inputs_declared() {
        let expected = describe(t.dtype, &t.shape);
        let Some(host) = inputs.tensor(&t.name) else {
            return Err(InterpError::MissingInput {
                name: t.name.clone(),
                expected,
            });
        };
        let mismatch = |given: String| InterpError::InputMismatch {
            name: t.name.clone(),
            expected: expected.clone(),
            given,
        };
        if host.dtype != t.dtype || host.shape != t.shape {
            return Err(mismatch(describe(host.dtype, &host.shape)));
        }
        let want = checked_product(&t.shape).checked_mul(t.dtype.size_bytes() as u64);
        if want != Some(host.data.len() as u64) {
            return Err(mismatch(format!(
                "{} with {} data bytes (want {})",
                describe(host.dtype, &host.shape),
                host.data.len(),
                want.map_or_else(|| "too many".to_string(), |w| w.to_string())
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            index: 0,
            opcode: "test",
            loc: None,
            machine: None,
        }
    }

    #[test]
    fn offsets_in_element_order() {
        let dims = [Dim::new(1, 3), Dim::new(4, 2)]; // transposed 2x3 view of a 3-row layout
        let Ok(o) = element_offsets(ctx(), 1, &dims, 16, 1) else {
            panic!("in bounds")
        };
        assert_eq!(o, vec![1, 5, 2, 6, 3, 7]);
        let Ok(neg) = element_offsets(ctx(), 4, &[Dim::new(-2, 3)], 8, 1) else {
            panic!()
        };
        assert_eq!(neg, vec![4, 2, 0]);
        assert!(element_offsets(ctx(), 4, &[Dim::new(-3, 3)], 8, 1).is_err());
        assert!(element_offsets(ctx(), 0, &[Dim::new(i64::MAX, 3)], 8, 1).is_err());
        assert_eq!(unflatten(7, &[2, 3, 2]), vec![1, 0, 1]);
    }
}
