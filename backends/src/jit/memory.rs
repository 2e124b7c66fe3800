//! Physical memory of a jit run: SBUF and PSUM as `partitions x bytes` arrays, one byte array
//! per Input/Output tensor and the HBM scratch arena, laid out as interp's machine level lays
//! them out except for a gap after each partition row ([`host_pitch`]), and without poison bits
//! (poison and race checking stay with interp).
//!
//! Compiled kernels address this memory through raw base pointers ([`JitMemory::base_ptr`]);
//! instructions that fall back to interp's `exec` see it through the same [`Store`] trait as
//! interp's own memories, resolving views with interp's checked resolvers.

use crate::interp::error::{Ctx, InterpError};
use crate::interp::exec::Store;
use crate::interp::memory::{
    MAX_STORAGE_BYTES, RegionKey, RegionShape, View, check_inputs, check_len, checked_product,
    resolve_hbm, resolve_tile,
};
use std::collections::BTreeMap;
use tessera_ir::{
    HbmAccess, HostTensor, MachineProgram, Space, TargetSpec, TensorKind, TileAccess,
};

/// Which physical memory a view lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Loc {
    Sbuf,
    Psum,
    /// The HBM scratch arena.
    Arena,
    /// An Input or Output tensor's own storage.
    Tensor(usize),
}

/// Bytes from one partition row of SBUF or PSUM to the next in host memory: the target's
/// partition size and five cache lines more. The target's sizes are multiples of 4 KiB (trn2:
/// 224 KiB of SBUF, 16 KiB of PSUM per partition), so the same column of every row would map to
/// the same sets of the host's caches, and an operand read down the partitions (a matmul's,
/// a transposing copy's) would keep evicting itself; an odd number of lines more spreads the
/// rows over all sets. Every address the jit forms goes through this pitch (planning's
/// resolvers and this memory alike), so nothing sees the gap.
pub(crate) fn host_pitch(partition_bytes: u64) -> u64 {
    partition_bytes + 5 * 64
}

/// All memories of one run.
#[derive(Debug)]
pub(crate) struct JitMemory<'p> {
    program: &'p MachineProgram,
    pub sbuf_pitch: u64,
    pub psum_pitch: u64,
    sbuf: Pages,
    psum: Pages,
    arena: Pages,
    /// Output tensors; empty for inputs (borrowed, below) and for scratch tensors, which live
    /// in the arena.
    tensors: Vec<Vec<u8>>,
    /// Input tensors, borrowed from the caller rather than copied every run: programs never
    /// write them (planning refuses an instruction that would, `JitError::BadInstruction`).
    inputs: Vec<Option<&'p [u8]>>,
}

/// SBUF, PSUM and the arena of a finished run, kept for the next one. Mapping them afresh
/// every run is not free: every page the run touches is faulted in and zeroed again. What a
/// run must see zeroed is cleared at its start ([`super::clear`]).
#[derive(Debug, Default)]
pub(crate) struct Spare {
    sbuf: Pages,
    psum: Pages,
    arena: Pages,
}

/// Zeroed memory straight from the kernel (an anonymous mapping, untouched pages costing
/// nothing) that asks for transparent huge pages: a run touches a few bytes of every one of
/// SBUF's 128 partition rows at a time, each row 192 KiB or more from the next, so with 4 KiB
/// pages nearly every row is a different page, and the address translations miss the TLB.
#[derive(Debug, Default)]
pub(crate) struct Pages(Option<memmap2::MmapMut>);

impl Pages {
    fn zeroed(len: usize) -> std::io::Result<Pages> {
        if len == 0 {
            return Ok(Pages(None));
        }
        let map = memmap2::MmapMut::map_anon(len)?;
        // Only advice: where the system has no transparent huge pages the memory is as good.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Pages(Some(map)))
    }
}

impl std::ops::Deref for Pages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl std::ops::DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

/// `spare` when it has `bytes` bytes (as the previous run left it), else a zeroed memory of
/// `bytes` bytes.
fn reused(what: &str, spare: Pages, bytes: u64) -> Result<Pages, InterpError> {
    if spare.len() as u64 == bytes {
        return Ok(spare);
    }
    drop(spare);
    let n = checked_size(what, bytes)?;
    Pages::zeroed(n).map_err(|e| InterpError::BadProgram {
        detail: format!("cannot map {bytes} bytes for {what}: {e}"),
    })
}

/// `bytes` as a size, within the emulator's limit.
fn checked_size(what: &str, bytes: u64) -> Result<usize, InterpError> {
    let too_large = || InterpError::BadProgram {
        detail: format!(
            "{what} needs {bytes} bytes, more than the emulator's limit of {MAX_STORAGE_BYTES}"
        ),
    };
    if bytes > MAX_STORAGE_BYTES {
        return Err(too_large());
    }
    usize::try_from(bytes).map_err(|_| too_large())
}

fn zeroed(what: &str, bytes: u64) -> Result<Vec<u8>, InterpError> {
    let n = checked_size(what, bytes)?;
    // A large zeroed allocation is lazily mapped: an output costs only the pages written.
    Ok(vec![0; n])
}

impl<'p> JitMemory<'p> {
    /// On-chip memories and arena (see `clears`), zeroed outputs; inputs borrowed (checked against the
    /// declarations, so every tensor's storage holds exactly its declared bytes).
    ///
    /// `spare` holds the memories of an earlier run (of any program, or empty); `clears` are
    /// the boxes this program may read before writing ([`super::clear::uncovered_reads`]),
    /// zeroed here, so the run sees zeros wherever it reads what it has not written.
    pub fn new<I: crate::TensorSet + ?Sized>(
        program: &'p MachineProgram,
        target: &TargetSpec,
        inputs: &'p I,
        spare: Spare,
        clears: &[super::clear::Clear],
    ) -> Result<Self, InterpError> {
        check_inputs(&program.tensors, inputs)?;
        let parts = target.partitions as u64;
        let (spb, ppb) = (
            host_pitch(target.sbuf_partition_bytes),
            host_pitch(target.psum_partition_bytes),
        );
        let sbuf_bytes = parts.saturating_mul(spb);
        let psum_bytes = parts.saturating_mul(ppb);
        let mut sbuf = reused("SBUF", spare.sbuf, sbuf_bytes)?;
        let mut psum = reused("PSUM", spare.psum, psum_bytes)?;
        let mut arena = reused("the HBM scratch arena", spare.arena, program.scratch_bytes)?;
        for c in clears {
            let (bytes, pb) = match c.loc {
                Loc::Sbuf => (&mut sbuf, spb),
                Loc::Psum => (&mut psum, ppb),
                Loc::Arena => (&mut arena, 0),
                Loc::Tensor(_) => continue,
            };
            for p in c.parts.0..c.parts.1 {
                let at = |b: u64| (p.saturating_mul(pb).saturating_add(b)).min(bytes.len() as u64);
                let (lo, hi) = (at(c.bytes.0) as usize, at(c.bytes.1) as usize);
                bytes[lo..hi.max(lo)].fill(0);
            }
        }
        let mut tensors = Vec::with_capacity(program.tensors.len());
        let mut borrowed = Vec::with_capacity(program.tensors.len());
        for t in &program.tensors {
            borrowed.push(match t.kind {
                TensorKind::Input => Some(inputs.tensor(&t.name).map_or(&[][..], |h| &h.data[..])),
                _ => None,
            });
            tensors.push(match t.kind {
                TensorKind::Scratch | TensorKind::Input => Vec::new(),
                TensorKind::Output => zeroed(
                    &format!("@{}", t.name),
                    checked_product(&t.shape).saturating_mul(t.dtype.size_bytes() as u64),
                )?,
            });
        }
        Ok(JitMemory {
            program,
            sbuf_pitch: spb,
            psum_pitch: ppb,
            sbuf,
            psum,
            arena,
            tensors,
            inputs: borrowed,
        })
    }

    pub fn bytes(&self, loc: Loc) -> Option<&[u8]> {
        match loc {
            Loc::Sbuf => Some(&self.sbuf),
            Loc::Psum => Some(&self.psum),
            Loc::Arena => Some(&self.arena),
            Loc::Tensor(i) => match self.inputs.get(i) {
                Some(Some(input)) => Some(input),
                _ => self.tensors.get(i).map(Vec::as_slice),
            },
        }
    }

    pub fn bytes_mut(&mut self, loc: Loc) -> Option<&mut [u8]> {
        match loc {
            Loc::Sbuf => Some(&mut self.sbuf),
            Loc::Psum => Some(&mut self.psum),
            Loc::Arena => Some(&mut self.arena),
            // Inputs are never written.
            Loc::Tensor(i) if matches!(self.inputs.get(i), Some(Some(_))) => None,
            Loc::Tensor(i) => self.tensors.get_mut(i).map(Vec::as_mut_slice),
        }
    }

    /// `src`'s bytes to read and `dst`'s to write at once, for two different memories (not
    /// two output tensors, which share one vector; not an input as `dst`).
    pub fn two(&mut self, src: Loc, dst: Loc) -> Option<(&[u8], &mut [u8])> {
        let JitMemory {
            sbuf,
            psum,
            arena,
            tensors,
            inputs,
            ..
        } = self;
        let mut chip = [
            Some(&mut sbuf[..]),
            Some(&mut psum[..]),
            Some(&mut arena[..]),
        ];
        // Output tensors share one vector: at most one of the two is taken from it.
        let mut outputs = Some(tensors);
        let slot = |loc: Loc| match loc {
            Loc::Sbuf => Some(0),
            Loc::Psum => Some(1),
            Loc::Arena => Some(2),
            Loc::Tensor(_) => None,
        };
        let dst: &mut [u8] = match (dst, slot(dst)) {
            (_, Some(k)) => chip[k].take()?,
            (Loc::Tensor(i), None) if matches!(inputs.get(i), Some(Some(_))) => return None,
            (Loc::Tensor(i), None) => outputs.take()?.get_mut(i)?,
            _ => return None,
        };
        let src: &[u8] = match (src, slot(src)) {
            (_, Some(k)) => chip[k].take()?,
            (Loc::Tensor(i), None) => match inputs.get(i) {
                Some(Some(input)) => input,
                _ => outputs.take()?.get(i)?,
            },
            _ => return None,
        };
        Some((src, dst))
    }

    /// Length of `loc`'s bytes.
    #[cfg(feature = "mlir")]
    pub fn len(&self, loc: Loc) -> usize {
        self.bytes(loc).map_or(0, <[u8]>::len)
    }

    /// Start of `loc`'s bytes, taken without materialising a reference to them (so pointers
    /// taken for several operands of one kernel call may alias).
    pub fn base_ptr(&mut self, loc: Loc) -> *mut u8 {
        match loc {
            Loc::Sbuf => self.sbuf.as_mut_ptr(),
            Loc::Psum => self.psum.as_mut_ptr(),
            Loc::Arena => self.arena.as_mut_ptr(),
            // An input's pointer is only read through: planning refuses any instruction that
            // writes an input tensor.
            Loc::Tensor(i) => match self.inputs.get(i) {
                Some(Some(input)) => input.as_ptr().cast_mut(),
                _ => self
                    .tensors
                    .get_mut(i)
                    .map_or(std::ptr::null_mut(), Vec::as_mut_ptr),
            },
        }
    }

    /// Where a resolved view sits: memory, byte address of element 0 of its first row, and the
    /// byte distance between rows (0 for HBM).
    fn placed(&self, view: &View) -> Option<(Loc, u64, u64)> {
        match view.key {
            RegionKey::Buffer(i) => {
                let b = self.program.buffers.get(i)?;
                let p = b.placement?;
                let (loc, pb) = match b.space {
                    Space::Sbuf => (Loc::Sbuf, self.sbuf_pitch),
                    Space::Psum => (Loc::Psum, self.psum_pitch),
                };
                let first = (p.partition as u64).checked_add(view.first_row as u64)?;
                Some((loc, first.checked_mul(pb)?.checked_add(p.byte_offset)?, pb))
            }
            RegionKey::Tensor(i) => {
                let t = self.program.tensors.get(i)?;
                match t.kind {
                    TensorKind::Scratch => {
                        Some((Loc::Arena, (*self.program.hbm_offsets.get(i)?)?, 0))
                    }
                    TensorKind::Input | TensorKind::Output => Some((Loc::Tensor(i), 0, 0)),
                }
            }
        }
    }

    /// Byte address of every element of the view, in element order.
    fn addresses(&self, ctx: Ctx<'_>, view: &View) -> Result<(Loc, Vec<usize>), InterpError> {
        let internal = || ctx.bad(format!("internal: `{}` has no physical address", view.role));
        let (loc, base, pb) = self.placed(view).ok_or_else(internal)?;
        let w = view.dtype.size_bytes() as u64;
        let mut out = Vec::with_capacity(view.len());
        for r in 0..view.rows as u64 {
            let row = base.checked_add(r * pb).ok_or_else(internal)?;
            for &o in &view.offsets {
                let at = (o as u64)
                    .checked_mul(w)
                    .and_then(|b| b.checked_add(row))
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or_else(internal)?;
                out.push(at);
            }
        }
        Ok((loc, out))
    }

    /// Every Output tensor. Without poison tracking, elements never written read as zero.
    /// The Output tensors by name, and the memories to reuse.
    pub fn finish(self) -> (BTreeMap<String, HostTensor>, Spare) {
        let spare = Spare {
            sbuf: self.sbuf,
            psum: self.psum,
            arena: self.arena,
        };
        let mut out = BTreeMap::new();
        for (t, data) in self.program.tensors.iter().zip(self.tensors) {
            if t.kind == TensorKind::Output {
                out.insert(
                    t.name.clone(),
                    HostTensor {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        data,
                    },
                );
            }
        }
        (out, spare)
    }
}

impl Store for JitMemory<'_> {
    fn tile_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        t: &TileAccess,
    ) -> Result<View, InterpError> {
        let slot = t.buf.0 as usize;
        let b = self
            .program
            .buffers
            .get(slot)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("buffer #{}", t.buf.0),
            })?;
        let name = format!("%{}", b.name);
        let shape = RegionShape {
            name: &name,
            dtype: b.dtype,
            rows: b.partitions as u64,
            row_elems: checked_product(&b.free_shape),
        };
        resolve_tile(ctx, role, RegionKey::Buffer(slot), shape, t)
    }

    fn hbm_view(
        &self,
        ctx: Ctx<'_>,
        role: &'static str,
        h: &HbmAccess,
    ) -> Result<View, InterpError> {
        let slot = h.tensor.0 as usize;
        let t = self
            .program
            .tensors
            .get(slot)
            .ok_or_else(|| InterpError::UnknownId {
                site: ctx.site(),
                role,
                what: format!("tensor #{}", h.tensor.0),
            })?;
        let name = format!("@{}", t.name);
        let shape = RegionShape {
            name: &name,
            dtype: t.dtype,
            rows: 1,
            row_elems: checked_product(&t.shape),
        };
        resolve_hbm(ctx, role, slot, shape, h)
    }

    fn read_bytes(&self, ctx: Ctx<'_>, view: &View) -> Result<Vec<u8>, InterpError> {
        let (loc, addresses) = self.addresses(ctx, view)?;
        let internal = || ctx.bad(format!("internal: `{}` lies outside memory", view.role));
        let bank = self.bytes(loc).ok_or_else(internal)?;
        let w = view.dtype.size_bytes();
        let mut out = Vec::with_capacity(addresses.len() * w);
        for at in addresses {
            let bytes = at
                .checked_add(w)
                .and_then(|end| bank.get(at..end))
                .ok_or_else(internal)?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    fn write_bytes(&mut self, ctx: Ctx<'_>, view: &View, bytes: &[u8]) -> Result<(), InterpError> {
        let w = view.dtype.size_bytes();
        check_len(ctx, view, bytes.len() / w)?;
        let (loc, addresses) = self.addresses(ctx, view)?;
        let internal = || ctx.bad(format!("internal: `{}` lies outside memory", view.role));
        let bank = self.bytes_mut(loc).ok_or_else(internal)?;
        for (at, src) in addresses.into_iter().zip(bytes.chunks_exact(w)) {
            let dst = at
                .checked_add(w)
                .and_then(|end| bank.get_mut(at..end))
                .ok_or_else(internal)?;
            dst.copy_from_slice(src);
        }
        Ok(())
    }
}
