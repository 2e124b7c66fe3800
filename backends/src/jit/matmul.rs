//! `nc_matmul` on the host: rows of up to [`tilemm::SHORT`] results (a late convolution
//! stage's 7x7 positions) by the tile kernel of [`tilemm`] (AVX-512), longer ones, and any
//! on hosts without AVX-512, by the `gemm` crate's sgemm (cache-blocked, AVX-512 or AVX2 FMA
//! kernels chosen at run time, one thread; it measured 7% faster than matrixmultiply on
//! ResNet-50 and the BERT layer, side by side, `tessera bench`).
//!
//! An operand whose rows are contiguous f32 at 4-byte-aligned addresses (the common case:
//! weights and activations laid out by the compiler, PSUM accumulators) is handed to the kernel
//! where it lies, with the partition pitch as its row stride, and an accumulating matmul
//! (`start = false`) adds into PSUM in place. Others (bf16/f16 operands, strided windows such
//! as a convolution's shifted input) are first gathered into packed f32 panels, a run of
//! evenly spaced elements at a time; a gathered destination is scattered back afterwards. A
//! weight chunk of a [`Frozen`](super::Frozen) input is read from its copy ([`Packs`]).
//!
//! Accumulation is fp32, as on the tensor engine, with fused multiply-adds, in the kernel's
//! order (the sgemm's blocked order, or the tile kernel's `k = 0, 1, ...` chain). interp
//! instead sums each dot product in f64 and rounds once, so the two differ by the fp32
//! rounding of the partial sums: at most about `K * 2^-24 * sum_k |s_k m_k|` per element,
//! whatever the order (K <= 128 gives under 8e-6 of the sum of absolute products). The tests
//! hold the jit within `1e-5 * ||result||_inf` (plus 1e-6 absolute) of interp. Accumulation
//! into an existing `dst` (`start = false`) adds the new product to it in f32.
//!
//! Memory is accessed through checked slices, except for the kernel call: its pointers are
//! formed from operands checked against their memories first.

use super::memory::{JitMemory, Loc};
use super::pack::Packs;
use super::plan::{Raw, Resolver};
use super::tilemm;
use super::{JitError, Step, planned};
use tessera_ir::program::Access;
use tessera_ir::{DType, MachineProgram, Op, TileAccess};

/// One operand: row `r`'s elements are, run after run, `runs[i].len` elements of `loc` from
/// byte `row0 + r * pb + runs[i].at`, `runs[i].step` bytes apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Panel {
    loc: Loc,
    dtype: DType,
    row0: u64,
    pb: u64,
    rows: usize,
    free: usize,
    /// The row's elements as runs of evenly spaced elements (maximal, built greedily).
    runs: Vec<Run>,
    /// One past the highest byte the panel touches.
    end: usize,
}

/// Evenly spaced elements of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Run {
    /// Byte offset of the first within the row.
    at: usize,
    /// Elements.
    len: usize,
    /// Bytes from one to the next (the element size when adjacent).
    step: usize,
}

impl Run {
    /// Bytes from the first element's start to the last element's end.
    fn span(&self, size: usize) -> usize {
        (self.len - 1) * self.step + size
    }
}

impl Panel {
    /// The panel of a checked operand (its offsets lie inside the buffer's partitions).
    pub fn new(raw: &Raw, t: &TileAccess) -> Panel {
        let w = raw.dtype.size_bytes() as i64;
        let mut offsets = vec![t.offset as i64 * w];
        for d in &t.dims {
            let mut next = Vec::with_capacity(offsets.len() * d.size as usize);
            for &o in &offsets {
                next.extend((0..d.size as i64).map(|i| o + i * d.stride * w));
            }
            offsets = next;
        }
        let size = raw.dtype.size_bytes();
        let mut runs: Vec<Run> = Vec::new();
        // Non-negative: the view was checked to lie inside each partition.
        for o in offsets.iter().map(|&o| o.max(0) as usize) {
            match runs.last_mut() {
                // A second element fixes the run's spacing (forward, at least an element).
                Some(r) if r.len == 1 && o >= r.at + size => {
                    r.step = o - r.at;
                    r.len = 2;
                }
                Some(r) if r.len > 1 && r.at + r.len * r.step == o => r.len += 1,
                _ => runs.push(Run {
                    at: o,
                    len: 1,
                    step: size,
                }),
            }
        }
        let high = runs.iter().map(|r| r.at + r.span(size)).max().unwrap_or(0);
        let rows = raw.rows as usize;
        Panel {
            loc: raw.loc,
            dtype: raw.dtype,
            row0: raw.row0,
            pb: raw.pb,
            rows,
            free: offsets.len(),
            runs,
            end: raw.row0 as usize + rows.saturating_sub(1) * raw.pb as usize + high,
        }
    }

    /// The same elements in `loc`, row 0 at byte `row0` and rows `pb` bytes apart.
    pub fn relocated(&self, loc: Loc, row0: u64, pb: u64) -> Panel {
        let high = self.end - self.row0 as usize - self.rows.saturating_sub(1) * self.pb as usize;
        Panel {
            loc,
            row0,
            pb,
            end: row0 as usize + self.rows.saturating_sub(1) * pb as usize + high,
            ..self.clone()
        }
    }

    /// Whether [`Panel::prefetch`] pays: rows shorter than 1 KiB (16 cache lines) each in its
    /// own stretch of memory, as a convolution's weight chunk is (128 output channels of a
    /// longer row), which the processor's own prefetcher does not follow. Longer rows it
    /// streams by itself, and asking for all their lines at once only stalls the core until
    /// they have arrived (measured: the BERT layer 5.7% slower with it, ResNet-50 10% faster).
    pub fn worth_prefetching(&self) -> bool {
        let size = self.dtype.size_bytes();
        let row = self.runs.iter().map(|r| r.span(size)).sum::<usize>();
        let contiguous = self.runs.len() == 1 && self.pb as usize == row;
        row < 1024 && !contiguous
    }

    /// Asks the processor to start loading the panel's cache lines (it is read soon).
    pub fn prefetch(&self, mem: &JitMemory<'_>) {
        let Some(bytes) = mem.bytes(self.loc) else {
            return;
        };
        let size = self.dtype.size_bytes();
        for r in 0..self.rows {
            for (i, run) in self.runs.iter().enumerate() {
                let at = self.at(r, i);
                let Some(row) = bytes.get(at..at + run.span(size)) else {
                    return;
                };
                for line in row.chunks(64) {
                    tilemm::hint(line.as_ptr());
                }
            }
        }
    }

    /// The panel's cache lines, to be asked for while a kernel computes; `None` (after asking
    /// for them all at once) when a row has several runs.
    fn lines(&self, mem: &JitMemory<'_>) -> Option<tilemm::Lines> {
        let bytes = mem.bytes(self.loc)?;
        let [run] = self.runs[..] else {
            self.prefetch(mem);
            return None;
        };
        let size = self.dtype.size_bytes();
        Some(tilemm::Lines::new(
            bytes.as_ptr().wrapping_add(self.at(0, 0)),
            self.rows,
            run.span(size),
            self.pb as usize,
        ))
    }

    /// One past the highest byte the panel touches.
    pub fn end(&self) -> usize {
        self.end
    }

    pub fn loc(&self) -> Loc {
        self.loc
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn free(&self) -> usize {
        self.free
    }

    /// Byte address of row `r`'s run `i`.
    fn at(&self, r: usize, i: usize) -> usize {
        self.row0 as usize + r * self.pb as usize + self.runs[i].at
    }

    /// `(byte address of element 0, row stride in elements)` when the sgemm can read or write
    /// the panel where it lies in `bytes`: f32, each row one run, 4-byte-aligned addresses,
    /// inside `bytes`.
    fn in_place(&self, bytes: &[u8]) -> Option<(usize, isize)> {
        let ok = self.dtype == DType::F32
            && self.runs.len() == 1
            && (self.runs[0].len == 1 || self.runs[0].step == 4)
            && self.pb.is_multiple_of(4)
            && self.end <= bytes.len()
            && (bytes.as_ptr() as usize + self.at(0, 0)).is_multiple_of(4);
        ok.then(|| (self.at(0, 0), (self.pb / 4) as isize))
    }

    /// Every element as f32, row-major.
    fn gather(&self, mem: &JitMemory<'_>, out: &mut Vec<f32>) -> Option<()> {
        // Every element is written: only a longer panel than the last zero-fills (the growth),
        // none clears.
        out.resize(self.rows * self.free, 0.0);
        self.gather_into(mem, out)
    }

    /// Every element as f32, row-major, into `out` (`rows * free` long).
    pub fn gather_into(&self, mem: &JitMemory<'_>, out: &mut [f32]) -> Option<()> {
        let bytes = mem.bytes(self.loc)?;
        let size = self.dtype.size_bytes();
        if out.len() != self.rows * self.free {
            return None;
        }
        let mut next = out.chunks_exact_mut(self.free.max(1));
        if self.dtype == DType::F32 && self.runs.iter().all(|r| r.len == 1 || r.step == 4) {
            // Runs of adjacent f32 values (a convolution window's rows, often a few dozen
            // bytes): one byte copy each, which for short runs costs far less than a loop of
            // conversions.
            for r in 0..self.rows {
                let mut row = next.next()?;
                for (i, run) in self.runs.iter().enumerate() {
                    let at = self.at(r, i);
                    let (dst, rest) = std::mem::take(&mut row).split_at_mut_checked(run.len)?;
                    row = rest;
                    bytemuck::cast_slice_mut::<f32, u8>(dst)
                        .copy_from_slice(bytes.get(at..at + 4 * run.len)?);
                }
            }
            return Some(());
        }
        for r in 0..self.rows {
            let mut row = next.next()?;
            for (i, run) in self.runs.iter().enumerate() {
                let at = self.at(r, i);
                let src = bytes.get(at..at + run.span(size))?;
                let (dst, rest) = std::mem::take(&mut row).split_at_mut_checked(run.len)?;
                row = rest;
                // Element-wise over exact-size iterators (vectorised when adjacent); `chunks`
                // of `step` bytes start at the elements, the last one just an element long.
                let elems = src.chunks(run.step).map(|c| &c[..size]);
                match self.dtype {
                    DType::F32 if run.step == 4 => {
                        for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        }
                    }
                    DType::F32 => {
                        for (d, c) in dst.iter_mut().zip(elems) {
                            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        }
                    }
                    DType::Bf16 => {
                        for (d, c) in dst.iter_mut().zip(elems) {
                            *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                        }
                    }
                    DType::F16 => {
                        for (d, c) in dst.iter_mut().zip(elems) {
                            *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                        }
                    }
                    _ => return None,
                }
            }
        }
        Some(())
    }

    /// Stores f32 values (row-major); the panel is f32.
    fn scatter(&self, mem: &mut JitMemory<'_>, values: &[f32]) -> Option<()> {
        let bytes = mem.bytes_mut(self.loc)?;
        let mut values = values.iter();
        for r in 0..self.rows {
            for (i, run) in self.runs.iter().enumerate() {
                let at = self.at(r, i);
                let dst = bytes.get_mut(at..at + run.span(4))?;
                for d in dst.chunks_mut(run.step) {
                    d.get_mut(..4)?
                        .copy_from_slice(&values.next()?.to_le_bytes());
                }
            }
        }
        Some(())
    }
}

/// A planned `nc_matmul`.
#[derive(Clone, Debug)]
pub(crate) struct MatmulPlan {
    pub stationary: Panel,
    pub moving: Panel,
    pub dst: Panel,
    pub start: bool,
    /// Where a gathered moving panel is kept, `(slot, version)`: matmuls given the same pair
    /// read the same elements with nothing written to them in between (`keep_windows`), so the
    /// second reuses the first's gathered copy.
    pub moving_slot: Option<(usize, u32)>,
    /// Which of (stationary, moving) to prefetch when this matmul runs next (forwarded to an
    /// input tensor and [`Panel::worth_prefetching`]); set once planning is done.
    pub prefetch: [bool; 2],
    /// The stationary operand's entry in the program's [`Packs`], when it is a frozen input's.
    pub packed: Option<usize>,
}

/// How many gathered moving panels a run keeps (a 3x3 convolution's taps fit).
pub(crate) const SLOTS: usize = 16;

/// Reusable packing buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// Kept moving panels (see [`MatmulPlan::moving_slot`]) and the version each holds.
    slots: Vec<(Vec<f32>, Option<u32>)>,
}

impl Scratch {
    /// Forgets the kept panels (a new run's memory holds new data).
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.1 = None;
        }
    }
}

/// Where the sgemm finds an operand: in place (byte address in its memory, row stride in
/// elements) or packed in a scratch buffer (row-major).
#[derive(Clone, Copy)]
enum Place {
    InPlace(usize, isize),
    Packed,
}

/// The error for an operand found outside its memory at run time (planning checked them all,
/// so this is an internal bug).
pub(crate) fn left_memory(at: &impl Fn() -> String, what: &str) -> JitError {
    JitError::BadInstruction {
        inst: at(),
        detail: format!("internal: a {what} operand left its memory"),
    }
}

/// Runs `p`, asking for the operands of `next` (the matmul after it) as it goes; reads the
/// stationary operand from `packs` when it was packed.
pub(crate) fn run(
    mem: &mut JitMemory<'_>,
    p: &MatmulPlan,
    next: Option<&MatmulPlan>,
    packs: Option<&Packs>,
    s: &mut Scratch,
    at: impl Fn() -> String,
) -> Result<(), JitError> {
    let internal = || left_memory(&at, "matmul");
    let (k, m, n) = (p.stationary.rows(), p.stationary.free(), p.moving.free());
    let dst_bytes = mem.bytes(p.dst.loc).ok_or_else(internal)?;
    let c_place = match p.dst.in_place(dst_bytes) {
        Some((a, rs)) => Place::InPlace(a, rs),
        None => Place::Packed,
    };
    // An operand in the destination's memory is gathered, so the sgemm never reads memory it
    // is writing through another pointer.
    let place = |panel: &Panel, s: &mut Vec<f32>| -> Option<Place> {
        let bytes = mem.bytes(panel.loc)?;
        match panel.in_place(bytes) {
            Some((a, rs)) if panel.loc != p.dst.loc => Some(Place::InPlace(a, rs)),
            _ => {
                panel.gather(mem, s)?;
                Some(Place::Packed)
            }
        }
    };
    let packed = |plan: &MatmulPlan| Some(packs?.get(plan.packed?)?.as_ptr());
    let a_packed = packed(p);
    let a_place = match a_packed {
        Some(_) => Place::Packed,
        None => place(&p.stationary, &mut s.a).ok_or_else(internal)?,
    };
    let b_place = match p.moving_slot {
        Some((slot, version)) => {
            if s.slots.len() <= slot {
                s.slots.resize_with(slot + 1, Default::default);
            }
            let (buf, held) = &mut s.slots[slot];
            if *held == Some(version) {
                Place::Packed
            } else {
                let placed = place(&p.moving, buf).ok_or_else(internal)?;
                *held = matches!(placed, Place::Packed).then_some(version);
                placed
            }
        }
        None => place(&p.moving, &mut s.b).ok_or_else(internal)?,
    };
    let b_buf: &[f32] = match p.moving_slot {
        Some((slot, _)) => s.slots.get(slot).map_or(&[], |x| x.0.as_slice()),
        None => &s.b,
    };
    if let Place::Packed = c_place {
        if p.start {
            s.c.clear();
            s.c.resize(m * n, 0.0);
        } else {
            p.dst.gather(mem, &mut s.c).ok_or_else(internal)?;
        }
    }
    if s.c.len() < m * n && matches!(c_place, Place::Packed)
        || s.a.len() < k * m && matches!(a_place, Place::Packed) && a_packed.is_none()
        || b_buf.len() < k * n && matches!(b_place, Place::Packed)
    {
        return Err(internal());
    }
    // Pointers and strides (in f32 elements). The sgemm computes
    // `c[i][j] = c[i][j] + sum_l lhs[i][l] rhs[l][j]` when accumulating (`read_dst`; without
    // it `c` is not read and its factor is ignored), and the stationary operand is stored
    // `k x m`, so the left operand is its transpose (row stride 1).
    let (a_ptr, rsa, csa) = match a_place {
        Place::InPlace(at, rs) => (
            mem.base_ptr(p.stationary.loc).wrapping_add(at) as *const f32,
            1,
            rs,
        ),
        // A packed copy holds `k x m` elements (`Packs::refresh`).
        Place::Packed => (a_packed.unwrap_or(s.a.as_ptr()), 1, m as isize),
    };
    let (b_ptr, rsb, csb) = match b_place {
        Place::InPlace(at, rs) => (
            mem.base_ptr(p.moving.loc).wrapping_add(at) as *const f32,
            rs,
            1,
        ),
        Place::Packed => (b_buf.as_ptr(), n as isize, 1),
    };
    let (c_ptr, rsc, csc) = match c_place {
        Place::InPlace(at, rs) => (mem.base_ptr(p.dst.loc).wrapping_add(at) as *mut f32, rs, 1),
        Place::Packed => (s.c.as_mut_ptr(), n as isize, 1),
    };
    // The next matmul's operands read from an input tensor (forwarded loads) come from
    // memory, not cache: ask for them while this one computes (where the processor would not
    // stream them by itself).
    let mut lines = tilemm::Prefetch::default();
    if let Some(next) = next {
        let [stationary, moving] = next.prefetch;
        let st = &next.stationary;
        let copy_bytes = 4 * st.rows() * st.free();
        lines.panels = [
            match (stationary, packed(next)) {
                (false, _) => None,
                (true, Some(copy)) => Some(tilemm::Lines::new(copy.cast(), 1, copy_bytes, 0)),
                (true, None) => st.lines(mem),
            },
            moving.then(|| next.moving.lines(mem)).flatten(),
        ];
    }
    // SAFETY: every pointer addresses f32 elements at 4-byte-aligned addresses. In place, the
    // panel's rows are single runs whose highest byte (`Panel::end`) was checked against the
    // length of its memory (`Panel::in_place`), and both kernels touch element `(r, e)` at
    // `r * row stride + e` for `r < rows`, `e < free` only, all inside; packed buffers hold at
    // least `rows * free` elements (checked above). The memories are not resized during the
    // call and no Rust reference to them is live; the destination does not overlap the
    // operands (operands in the destination's memory are packed copies).
    unsafe {
        match (
            usize::try_from(csa),
            usize::try_from(rsb),
            usize::try_from(rsc),
        ) {
            // Short rows (a late convolution stage's 7x7 positions) go to the tile kernel,
            // which asks for the next operands a line per step; longer ones to the sgemm
            // (the two measured alike there), the next operands asked for first.
            (Ok(stationary_stride), Ok(moving_stride), Ok(dst_stride))
                if n <= tilemm::SHORT
                    && tilemm::available()
                    && rsa == 1
                    && csb == 1
                    && csc == 1 =>
            {
                let ops = tilemm::Operands {
                    stationary: a_ptr,
                    stationary_stride,
                    moving: b_ptr,
                    moving_stride,
                    dst: c_ptr,
                    dst_stride,
                };
                tilemm::matmul(m, n, k, ops, !p.start, &mut lines);
            }
            _ => {
                lines.all();
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_ptr,
                    csc,
                    rsc,
                    !p.start,
                    a_ptr,
                    csa,
                    rsa,
                    b_ptr,
                    csb,
                    rsb,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    }
    if let Place::Packed = c_place {
        p.dst.scatter(mem, &s.c).ok_or_else(internal)?;
    }
    Ok(())
}

/// A planned `nc_transpose`: `dst[f][p] = src[p][f]`, widened to the f32 destination.
#[derive(Clone, Debug)]
pub(crate) struct TransposePlan {
    pub src: Panel,
    pub dst: Panel,
}

/// `nc_transpose` on the host: gather the source (f32, bf16 or f16, each widening to f32
/// exactly, as interp's conversion does), transpose, scatter to the f32 destination. The
/// result is bit-identical to interp's.
pub(crate) fn transpose(
    mem: &mut JitMemory<'_>,
    t: &TransposePlan,
    s: &mut Scratch,
    at: impl Fn() -> String,
) -> Result<(), JitError> {
    let internal = || left_memory(&at, "transpose");
    let (p, f) = (t.src.rows(), t.src.free());
    t.src.gather(mem, &mut s.a).ok_or_else(internal)?;
    s.c.clear();
    s.c.resize(p * f, 0.0);
    for (pi, row) in s.a.chunks_exact(f.max(1)).enumerate() {
        for (fi, &v) in row.iter().enumerate() {
            s.c[fi * p + pi] = v;
        }
    }
    t.dst.scatter(mem, &s.c).ok_or_else(internal)
}

/// Gives matmuls that gather the same moving window a shared slot and version, so the window
/// is gathered once: a convolution multiplies each shifted input window by every output-channel
/// chunk's weights. Walking the run order, a matmul whose moving panel equals one kept in a slot
/// (same memory, addresses and layout) takes that slot's version; any instruction writing
/// memory a kept panel may touch retires it, so equal versions always mean equal contents. The
/// least recently used slot is replaced when all are taken. (A panel forwarded to an input
/// tensor, which nothing writes, is retired by writes to the SBUF view it replaced: needlessly,
/// but safely.)
pub(crate) fn keep_windows(
    program: &MachineProgram,
    order: &[(usize, usize)],
    resolvers: &[Vec<Resolver<'_>>],
    steps: &mut [Vec<Step>],
) -> Result<u64, JitError> {
    let mut shared = 0;
    // Per slot: the kept panel, the view it reads (for overlap), its version, its last use.
    let mut kept: Vec<Option<(Panel, Raw, u32, usize)>> = vec![None; SLOTS];
    let mut version = 0u32;
    for (at, &pos) in order.iter().enumerate() {
        let Some((inst, res, step)) = planned(program, resolvers, steps, pos) else {
            continue;
        };
        if let (Step::Matmul(p), Op::Matmul { moving, .. }) = (&mut *step, &inst.op) {
            let same = kept
                .iter()
                .position(|k| k.as_ref().is_some_and(|k| k.0 == p.moving));
            let slot = match same {
                Some(slot) => {
                    shared += 1;
                    slot
                }
                None => {
                    // A free slot, else the least recently used.
                    let slot = kept
                        .iter()
                        .position(Option::is_none)
                        .or_else(|| {
                            (0..kept.len()).min_by_key(|&s| kept[s].as_ref().map_or(0, |k| k.3))
                        })
                        .unwrap_or(0);
                    version += 1;
                    kept[slot] = Some((p.moving.clone(), res.tile("moving", moving)?, version, at));
                    slot
                }
            };
            if let Some(k) = kept[slot].as_mut() {
                k.3 = at;
                p.moving_slot = Some((slot, k.2));
            }
        }
        for operand in inst.op.tile_operands() {
            if operand.access == Access::Write {
                let w = res.tile(operand.role, operand.tile)?;
                for k in kept.iter_mut() {
                    if k.as_ref().is_some_and(|k| k.1.may_overlap(&w)) {
                        *k = None;
                    }
                }
            }
        }
    }
    Ok(shared)
}
